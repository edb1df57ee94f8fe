"""Export a demo dataset to the LeRobotDataset v3.0 layout (pyarrow only; no lerobot package).

Schema followed (huggingface/lerobot@7427f31, src/lerobot/datasets/{utils,dataset_metadata,
dataset_writer,compute_stats}.py and docs/source/lerobot-dataset-v3.mdx)::

    out/meta/info.json     {"codebase_version": "v3.0", "robot_type": "panda", "total_episodes",
                            "total_frames", "total_tasks", "chunks_size": 1000,
                            "data_files_size_in_mb": 100, "video_files_size_in_mb": 200, "fps": 10,
                            "splits": {"train": "0:N"},
                            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                            "video_path": null, "features": {...}}
    out/meta/stats.json    {feature: {"min","max","mean","std","count","q01","q10","q50","q90","q99"}}
                           images: per channel in [0,1], shape (3,1,1); others: shape (D,)
    out/meta/tasks.parquet task_index int64, task string (pandas metadata marks "task" as the index,
                           as pandas.DataFrame.to_parquet writes it)
    out/meta/episodes/chunk-000/file-000.parquet  one row per episode: episode_index, tasks
                           (list<string>), length, data/chunk_index, data/file_index,
                           dataset_from_index, dataset_to_index, meta/episodes/chunk_index,
                           meta/episodes/file_index, stats/<feature>/<stat> (lists), plus
                           vlabench/{task,split,index,seed,suite,success} for provenance
    out/data/chunk-000/file-000.parquet  one row per frame (new file past ~100 MB, new chunk
                           every 1000 files), one row group per episode:
        observation.images.front  struct<bytes: binary (PNG), path: string (null)>  dtype "image"
        observation.images.wrist  same, shape (h, w, 3)
        observation.state         fixed_size_list<float32>[8]
        action                    fixed_size_list<float32>[7]
        timestamp float32 (= frame_index / fps), frame_index, episode_index, index, task_index int64

Parquet schemas carry the "huggingface" metadata ({"info": {"features": ...}}) that the
`datasets` library uses to decode the image structs. A LeRobot "task" is the language
instruction, so tasks.parquet lists the distinct instructions. Episodes keep vlabench's global
order (sorted (task, split, index, seed)). Image stats are exact, over every pixel of every frame
(from per-channel 256-bin histograms), with "count" = number of frames.
The export is written to a temp directory and renamed into place (a killed export leaves only
``.<out>.tmp-<pid>``, removed by the next export to the same place). The source shards are verified
against their recorded checksums before anything is written (see manifest.verify_dataset).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tyro.conf import Positional

from vlabench.data.layout import CorruptShardError
from vlabench.data.manifest import manifest_episodes, verify_dataset
from vlabench.data.stats import ACTION_NAMES, STATE_NAMES

CODEBASE_VERSION = "v3.0"
FPS = 10
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_IN_MB = 100
VIDEO_FILES_SIZE_IN_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
EPISODES_PATH = "meta/episodes/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
CAMERAS = {"observation.images.front": "image", "observation.images.wrist": "wrist_image"}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _features(shapes: dict[str, tuple[int, ...]]) -> dict:
    feats: dict[str, dict] = {}
    for name in CAMERAS:
        feats[name] = {"dtype": "image", "shape": list(shapes[name]), "names": ["height", "width", "channels"]}
    feats["observation.state"] = {"dtype": "float32", "shape": [8], "names": list(STATE_NAMES)}
    feats["action"] = {"dtype": "float32", "shape": [7], "names": list(ACTION_NAMES)}
    feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        feats[name] = {"dtype": "int64", "shape": [1], "names": None}
    return feats


def _hf_features(feats: dict) -> dict:
    """The `datasets` Features JSON stored in the parquet schema metadata."""
    out = {}
    for name, ft in feats.items():
        if ft["dtype"] == "image":
            out[name] = {"_type": "Image"}
        elif ft["shape"] == [1]:
            out[name] = {"dtype": ft["dtype"], "_type": "Value"}
        else:
            out[name] = {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": ft["shape"][0],
                         "_type": "Sequence"}
    return {"info": {"features": out}}


def _schema(feats: dict) -> pa.Schema:
    fields = [pa.field(n, IMAGE_STRUCT) for n in CAMERAS]
    fields += [pa.field("observation.state", pa.list_(pa.float32(), 8)), pa.field("action", pa.list_(pa.float32(), 7)),
               pa.field("timestamp", pa.float32())]
    fields += [pa.field(n, pa.int64()) for n in ("frame_index", "episode_index", "index", "task_index")]
    return pa.schema(fields, metadata={"huggingface": json.dumps(_hf_features(feats))})


def _png(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """LeRobot-style stats of x (N, D): min, max, mean, std, count, q01..q99 (each (D,))."""
    x = x.astype(np.float64).reshape(len(x), -1)
    out = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)])}
    for q, v in zip(QUANTILES, np.quantile(x, QUANTILES, axis=0)):
        out[f"q{round(q * 100):02d}"] = v
    return out


def _channel_hist(frames: np.ndarray) -> np.ndarray:
    """(3, 256) pixel-value counts of uint8 frames (N, H, W, 3)."""
    return np.stack([np.bincount(frames[..., c].ravel(), minlength=256) for c in range(3)])


def _image_stats(hist: np.ndarray, n_frames: int) -> dict[str, np.ndarray]:
    """Exact per-channel stats in [0,1] from (3, 256) histograms, shaped (3,1,1) like LeRobot's.

    Quantiles reproduce numpy's linear interpolation on the sorted pixel values.
    """
    v = np.arange(256) / 255.0
    n = hist.sum(1)
    mean = (hist * v).sum(1) / n
    out = {"min": np.array([v[h.nonzero()[0][0]] for h in hist]),
           "max": np.array([v[h.nonzero()[0][-1]] for h in hist]), "mean": mean,
           "std": np.sqrt(np.maximum((hist * v**2).sum(1) / n - mean**2, 0.0))}
    cum = hist.cumsum(1)
    for q in QUANTILES:
        vals = []
        for c in range(3):
            pos = q * (n[c] - 1)
            lo, hi = (np.searchsorted(cum[c], k, side="right") for k in (np.floor(pos), np.ceil(pos)))
            vals.append(v[lo] + (pos - np.floor(pos)) * (v[hi] - v[lo]))
        out[f"q{round(q * 100):02d}"] = np.array(vals)
    out = {k: x.reshape(3, 1, 1) for k, x in out.items()}
    out["count"] = np.array([n_frames])
    return out


class OutputExistsError(FileExistsError, ValueError):
    """The export target exists and overwrite was not asked for (a ValueError: the CLI prints one line)."""


def _episode_arrays(root: Path, ep: dict) -> dict[str, np.ndarray]:
    try:
        with h5py.File(root / ep["file"], "r") as f:
            g = f["data"][ep["demo"]]
            return {"image": g["obs/image"][()], "wrist_image": g["obs/wrist_image"][()],
                    "state": g["obs/state"][()].astype(np.float32), "actions": g["actions"][()].astype(np.float32)}
    except (OSError, KeyError, ValueError) as e:
        raise CorruptShardError(root / ep["file"], f"reading {ep['demo']}: {type(e).__name__}: {e}") from e


def _remove_stale_temps(out: Path) -> None:
    """Delete temp (and replaced) directories of earlier exports to `out` whose process is gone."""
    for d in [*out.parent.glob(f".{out.name}.tmp-*"), *out.parent.glob(f".{out.name}.old-*")]:
        pid = d.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's


def _publish_dir(tmp: Path, out: Path) -> None:
    """Move the finished directory `tmp` to `out`, replacing an old `out` only once `tmp` is complete."""
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def export_lerobot(data: Path, out: Path, skip_bad: bool = False) -> Path:
    """Write `data` (a demo directory) as a LeRobotDataset v3.0 directory at `out`."""
    data, out = Path(data), Path(out)
    episodes = manifest_episodes(verify_dataset(data, skip_bad=skip_bad))
    if not episodes:
        raise ValueError(f"demo dataset {data} holds no episodes to export")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        _write_export(data, episodes, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _publish_dir(tmp, out)
    return out


def _write_export(data: Path, episodes: list[dict], tmp: Path) -> None:
    from tqdm import tqdm

    tasks: dict[str, int] = {}
    ep_rows: list[dict] = []
    lowdim: dict[str, list[np.ndarray]] = {"state": [], "actions": []}
    hists = {n: np.zeros((3, 256), np.int64) for n in CAMERAS}
    feats = schema = writer = None
    chunk_idx = file_idx = 0
    file_bytes = 0
    index = 0
    for e_idx, ep in enumerate(tqdm(episodes, desc="export lerobot", unit="ep")):
        arr = _episode_arrays(data, ep)
        T = len(arr["actions"])
        if feats is None:
            feats = _features({n: arr[k].shape[1:] for n, k in CAMERAS.items()})
            schema = _schema(feats)
        task_index = tasks.setdefault(ep["instruction"], len(tasks))
        cols = {n: pa.array([{"bytes": _png(fr), "path": None} for fr in arr[k]], IMAGE_STRUCT)
                for n, k in CAMERAS.items()}
        frame_index = np.arange(T, dtype=np.int64)
        cols["observation.state"] = pa.FixedSizeListArray.from_arrays(pa.array(arr["state"].reshape(-1)), 8)
        cols["action"] = pa.FixedSizeListArray.from_arrays(pa.array(arr["actions"].reshape(-1)), 7)
        cols["timestamp"] = pa.array((frame_index / FPS).astype(np.float32))
        cols["frame_index"] = pa.array(frame_index)
        cols["episode_index"] = pa.array(np.full(T, e_idx, np.int64))
        cols["index"] = pa.array(np.arange(index, index + T, dtype=np.int64))
        cols["task_index"] = pa.array(np.full(T, task_index, np.int64))
        table = pa.Table.from_pydict(cols, schema=schema)
        if writer is not None and file_bytes + table.nbytes > DATA_FILES_SIZE_IN_MB * 2**20:
            writer.close()
            writer = None
            file_idx += 1
            if file_idx == CHUNKS_SIZE:
                chunk_idx, file_idx = chunk_idx + 1, 0
        if writer is None:
            path = tmp / DATA_PATH.format(chunk_index=chunk_idx, file_index=file_idx)
            path.parent.mkdir(parents=True, exist_ok=True)
            writer, file_bytes = pq.ParquetWriter(path, schema, compression="snappy"), 0
        writer.write_table(table)
        file_bytes += table.nbytes
        ep_hists = {n: _channel_hist(arr[k]) for n, k in CAMERAS.items()}
        ep_stats = {"observation.state": _stats(arr["state"]), "action": _stats(arr["actions"]),
                    **{n: _image_stats(h, T) for n, h in ep_hists.items()}}
        for n in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
            ep_stats[n] = _stats(np.asarray(cols[n]).reshape(-1, 1))
        row = {"episode_index": e_idx, "tasks": [ep["instruction"]], "length": T,
               "data/chunk_index": chunk_idx, "data/file_index": file_idx,
               "dataset_from_index": index, "dataset_to_index": index + T,
               "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0}
        for feat, st in ep_stats.items():
            row.update({f"stats/{feat}/{k}": v.tolist() for k, v in st.items()})
        row.update({f"vlabench/{k}": ep[k] for k in ("task", "split", "index", "seed", "suite", "success")})
        ep_rows.append(row)
        for k in lowdim:
            lowdim[k].append(arr[k])
        for n in CAMERAS:
            hists[n] += ep_hists[n]
        index += T
    writer.close()
    _write_meta(tmp, feats, tasks, ep_rows, lowdim, hists, index)


def _write_meta(tmp: Path, feats: dict, tasks: dict[str, int], ep_rows: list[dict],
                lowdim: dict[str, list[np.ndarray]], hists: dict[str, np.ndarray], n_frames: int) -> None:
    (tmp / "meta/episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    info = {"codebase_version": CODEBASE_VERSION, "robot_type": "panda", "total_episodes": len(ep_rows),
            "total_frames": n_frames, "total_tasks": len(tasks), "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_IN_MB, "video_files_size_in_mb": VIDEO_FILES_SIZE_IN_MB,
            "fps": FPS, "splits": {"train": f"0:{len(ep_rows)}"}, "data_path": DATA_PATH,
            "video_path": None, "features": feats}
    (tmp / "meta/info.json").write_text(json.dumps(info, indent=4) + "\n")
    stats = {"observation.state": _stats(np.concatenate(lowdim["state"])),
             "action": _stats(np.concatenate(lowdim["actions"])),
             **{n: _image_stats(h, n_frames) for n, h in hists.items()}}
    ep_len = np.array([r["length"] for r in ep_rows])
    frame_index = np.concatenate([np.arange(n) for n in ep_len])
    scalar = {"timestamp": frame_index / FPS, "frame_index": frame_index,
              "episode_index": np.repeat(np.arange(len(ep_rows)), ep_len), "index": np.arange(n_frames),
              "task_index": np.concatenate([np.full(n, tasks[r["tasks"][0]]) for n, r in zip(ep_len, ep_rows)])}
    stats.update({k: _stats(v.reshape(-1, 1)) for k, v in scalar.items()})
    (tmp / "meta/stats.json").write_text(json.dumps({f: {k: v.tolist() for k, v in s.items()}
                                                     for f, s in stats.items()}, indent=4) + "\n")
    pandas_meta = {"index_columns": ["task"], "column_indexes": [], "pandas_version": "2.2.0",
                   "creator": {"library": "vlabench"},
                   "columns": [{"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
                                "numpy_type": "int64", "metadata": None},
                               {"name": "task", "field_name": "task", "pandas_type": "unicode",
                                "numpy_type": "object", "metadata": None}]}
    task_table = pa.table({"task_index": pa.array(list(tasks.values()), pa.int64()),
                           "task": pa.array(list(tasks.keys()), pa.string())})
    pq.write_table(task_table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)}),
                   tmp / "meta/tasks.parquet")
    pq.write_table(pa.Table.from_pylist(ep_rows), tmp / EPISODES_PATH.format(chunk_index=0, file_index=0))


EXPORT_FORMATS = {"lerobot": export_lerobot}


@dataclass
class ExportConfig:
    """Export a demo dataset to another format."""

    data: Positional[Path]
    """Demo dataset directory (shards written by `vlabench collect`)."""
    out: Path
    """Output directory; replaced as a whole if it exists and overwrite is set."""
    format: str = "lerobot"
    """Target format; one of: lerobot (LeRobotDataset v3.0, images as PNG in parquet)."""
    overwrite: bool = False
    """Replace `out` if it already exists."""
    skip_bad: bool = False
    """Skip unreadable or changed shards with a warning instead of failing."""


def run(cfg: ExportConfig) -> Path:
    """Run the export; returns the output directory."""
    if cfg.format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {cfg.format!r}; valid: {', '.join(sorted(EXPORT_FORMATS))}")
    if Path(cfg.out).exists() and not cfg.overwrite:
        raise OutputExistsError(f"export target {cfg.out} exists; pass --overwrite (overwrite=True) to replace it, "
                                "or choose another --out")
    out = EXPORT_FORMATS[cfg.format](Path(cfg.data), Path(cfg.out), skip_bad=cfg.skip_bad)
    print(f"exported {cfg.data} -> {out} ({cfg.format})")
    return out
