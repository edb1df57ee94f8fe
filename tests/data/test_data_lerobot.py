"""LeRobot v3.0 export read back with pyarrow against the documented schema."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlabench.data.lerobot import ExportConfig, run

INFO_KEYS = {"codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "chunks_size",
             "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits", "data_path", "video_path",
             "features"}


@pytest.fixture
def exported(dataset_dir: Path, tmp_path: Path) -> Path:
    return run(ExportConfig(data=dataset_dir, out=tmp_path / "lerobot"))


def test_info_json(exported: Path, episodes: list[dict], synth) -> None:
    info = json.loads((exported / "meta/info.json").read_text())
    assert set(info) == INFO_KEYS
    n_frames = sum(len(e["actions"]) for e in episodes)
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == len(episodes) and info["total_frames"] == n_frames
    assert info["total_tasks"] == len({e["attrs"]["instruction"] for e in episodes})
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] is None and info["splits"] == {"train": f"0:{len(episodes)}"}
    f = info["features"]
    assert f["observation.images.front"] == {"dtype": "image", "shape": [synth.H, synth.W, 3],
                                             "names": ["height", "width", "channels"]}
    assert f["observation.images.wrist"]["shape"] == [synth.WH, synth.WW, 3]
    assert f["observation.state"]["shape"] == [8] and len(f["observation.state"]["names"]) == 8
    assert f["action"] == {"dtype": "float32", "shape": [7], "names": f["action"]["names"]}
    for k in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert f[k]["shape"] == [1]


def test_data_parquet(exported: Path, episodes: list[dict], synth) -> None:
    t = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    info = json.loads((exported / "meta/info.json").read_text())
    assert t.column_names == list(info["features"])
    assert t.num_rows == info["total_frames"]
    s = t.schema
    img_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    assert s.field("observation.images.front").type == img_type == s.field("observation.images.wrist").type
    assert s.field("observation.state").type == pa.list_(pa.float32(), 8)
    assert s.field("action").type == pa.list_(pa.float32(), 7)
    assert s.field("timestamp").type == pa.float32()
    for k in ("frame_index", "episode_index", "index", "task_index"):
        assert s.field(k).type == pa.int64()
    hf = json.loads(s.metadata[b"huggingface"])["info"]["features"]
    assert hf["observation.images.front"] == {"_type": "Image"}
    rows = t.to_pydict()
    assert rows["index"] == list(range(t.num_rows))
    ordered = synth.sorted_by_key(episodes)
    starts = np.cumsum([0] + [len(e["actions"]) for e in ordered])
    for e, ep in enumerate(ordered):
        T = len(ep["actions"])
        sl = slice(starts[e], starts[e] + T)
        assert rows["episode_index"][sl] == [e] * T and rows["frame_index"][sl] == list(range(T))
        np.testing.assert_allclose(rows["timestamp"][sl], np.arange(T) / 10, rtol=1e-6)
        np.testing.assert_array_equal(np.array(rows["action"][sl], np.float32), ep["actions"])
        np.testing.assert_array_equal(np.array(rows["observation.state"][sl], np.float32), ep["obs"]["state"])
        for t_ in (0, T - 1):
            front = np.asarray(Image.open(io.BytesIO(rows["observation.images.front"][starts[e] + t_]["bytes"])))
            wrist = np.asarray(Image.open(io.BytesIO(rows["observation.images.wrist"][starts[e] + t_]["bytes"])))
            assert front.shape == (synth.H, synth.W, 3) and wrist.shape == (synth.WH, synth.WW, 3)
            np.testing.assert_array_equal(front, ep["obs"]["image"][t_])  # PNG is lossless


def test_meta_parquets_and_stats(exported: Path, episodes: list[dict], synth) -> None:
    tasks = pq.read_table(exported / "meta/tasks.parquet")
    assert tasks.column_names == ["task_index", "task"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    task_of = dict(zip(tasks["task"].to_pylist(), tasks["task_index"].to_pylist()))
    eps = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet")
    assert eps.num_rows == len(episodes)
    for col in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index",
                "stats/action/mean", "stats/observation.images.front/mean"):
        assert col in eps.column_names, col
    e = eps.to_pydict()
    ordered = synth.sorted_by_key(episodes)
    assert e["length"] == [len(x["actions"]) for x in ordered]
    assert e["dataset_to_index"][-1] == sum(e["length"]) and e["dataset_from_index"][1:] == e["dataset_to_index"][:-1]
    assert [t[0] for t in e["tasks"]] == [x["attrs"]["instruction"] for x in ordered]
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet", columns=["task_index", "episode_index"])
    for ti, ei in zip(data["task_index"].to_pylist(), data["episode_index"].to_pylist()):
        assert ti == task_of[e["tasks"][ei][0]]
    stats = json.loads((exported / "meta/stats.json").read_text())
    acts = np.concatenate([x["actions"] for x in episodes]).astype(np.float64)
    np.testing.assert_allclose(stats["action"]["mean"], acts.mean(0), rtol=1e-6)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(acts, 0.99, axis=0), rtol=1e-6)
    imgs = np.concatenate([x["obs"]["image"] for x in episodes]).reshape(-1, 3) / 255.0
    front = stats["observation.images.front"]
    assert np.array(front["mean"]).shape == (3, 1, 1)
    np.testing.assert_allclose(np.array(front["mean"]).ravel(), imgs.mean(0), rtol=1e-9)
    np.testing.assert_allclose(np.array(front["std"]).ravel(), imgs.std(0), rtol=1e-6)
    np.testing.assert_allclose(np.array(front["q10"]).ravel(), np.quantile(imgs, 0.1, axis=0), rtol=1e-9)
    assert front["count"] == [len(imgs) // (synth.H * synth.W)]


def test_export_errors(dataset_dir: Path, exported: Path) -> None:
    with pytest.raises(ValueError, match="unknown export format 'rlds'; valid: lerobot"):
        run(ExportConfig(data=dataset_dir, out=exported.parent / "x", format="rlds"))
    with pytest.raises(FileExistsError, match="overwrite"):
        run(ExportConfig(data=dataset_dir, out=exported))
    run(ExportConfig(data=dataset_dir, out=exported, overwrite=True))
    assert not list(exported.parent.glob(".lerobot.tmp-*"))


def test_export_into_an_existing_folder_is_one_line(dataset_dir: Path, exported: Path, capsys) -> None:
    from vlabench.cli import main

    before = sorted(p.relative_to(exported) for p in exported.rglob("*"))
    assert main(["export", str(dataset_dir), "--out", str(exported)]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"vlabench export: error: export target {exported} exists; pass --overwrite (overwrite=True) "
                   "to replace it, or choose another --out"), err
    assert sorted(p.relative_to(exported) for p in exported.rglob("*")) == before  # left untouched


def test_killed_export_leftovers_are_removed(dataset_dir: Path, tmp_path: Path) -> None:
    stale = tmp_path / ".lerobot.tmp-999999999"  # a PID no process has
    (stale / "data").mkdir(parents=True)
    run(ExportConfig(data=dataset_dir, out=tmp_path / "lerobot"))
    assert not stale.exists() and (tmp_path / "lerobot/meta/info.json").exists()
