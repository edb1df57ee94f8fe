"""Episode videos: front + wrist camera side by side, upscaled, with the instruction drawn under them.

Encoded with the ffmpeg binary that ships inside the ``imageio-ffmpeg`` wheel (works offline): H.264
(libx264, yuv420p, plays everywhere), falling back to MPEG-4 part 2 when libx264 is unavailable.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
from pathlib import Path

import numpy as np

from vlabench.eval.metrics import is_success
from vlabench.fileio import atomic_path
from vlabench.suite import Episode

VIDEOS_DIR, CANDIDATES_DIR = "videos", ".candidates"
FPS = 10
MIN_HEIGHT = 256
"""Small sim images are upscaled (nearest) to at least this height so that the caption is readable."""
CAPTION_LINES = 3
LINE_HEIGHT = 13


def _upscale(img: np.ndarray, height: int) -> np.ndarray:
    k = max(1, -(-height // img.shape[0]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


def compose_frame(image: np.ndarray, wrist: np.ndarray | None, caption: list[str]) -> np.ndarray:
    """One video frame (H', W', 3) uint8; both sides are multiples of 16 (what H.264 encoders want)."""
    from PIL import Image, ImageDraw, ImageFont

    front = _upscale(image, MIN_HEIGHT)
    parts = [front]
    if wrist is not None:
        w = _upscale(wrist, front.shape[0])[: front.shape[0]]
        parts.append(np.pad(w, ((0, front.shape[0] - w.shape[0]), (0, 0), (0, 0))))
    top = np.concatenate(parts, axis=1)
    bar = CAPTION_LINES * LINE_HEIGHT + 6
    H = -(-(top.shape[0] + bar) // 16) * 16
    W = -(-top.shape[1] // 16) * 16
    frame = np.zeros((H, W, 3), np.uint8)
    frame[: top.shape[0], : top.shape[1]] = top
    canvas = Image.fromarray(frame)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    y = top.shape[0] + 3
    for line in caption[:CAPTION_LINES]:
        draw.text((4, y), line, fill=(255, 255, 255), font=font)
        y += LINE_HEIGHT
    return np.asarray(canvas)


def captions(instruction: str, header: str, width_px: int) -> list[str]:
    """The instruction wrapped to the frame width (about 6 px per default-font character)."""
    cols = max(20, width_px // 6 - 2)
    return [header, *textwrap.wrap(instruction, cols)][:CAPTION_LINES]


def write_video(path: str | Path, images: list[np.ndarray], wrists: list[np.ndarray] | None, instruction: str,
                header: str = "", fps: int = FPS) -> Path:
    """Encode frames to an MP4 at ``path`` (written atomically).

    images: front frames, each (H, W, 3) uint8; wrists: wrist frames (h, w, 3) uint8 or None.
    """
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not images:
        raise ValueError(f"no frames to write to {path}")
    width = _upscale(images[0], MIN_HEIGHT).shape[1] * (2 if wrists else 1)
    caption = captions(instruction, header, width)
    frames = [compose_frame(img, wrists[i] if wrists else None, caption) for i, img in enumerate(images)]
    last: Exception | None = None
    for codec in ("libx264", "mpeg4"):
        try:
            with atomic_path(path, suffix=".mp4") as tmp:  # ffmpeg picks the container by suffix
                with imageio.get_writer(tmp, fps=fps, codec=codec, macro_block_size=16, quality=None,
                                        output_params=["-crf", "23"] if codec == "libx264" else ["-q:v", "4"],
                                        pixelformat="yuv420p") as w:
                    for f in frames:
                        w.append_data(f)
            return path
        except Exception as e:  # codec missing from this ffmpeg build: try the next one
            last = e
    raise RuntimeError(f"could not encode {path} with libx264 or mpeg4: {last}")


def video_stem(ep: dict | Episode) -> str:
    t, s, i = (ep.task, ep.split, ep.index) if isinstance(ep, Episode) else (ep["task"], ep["split"], ep["index"])
    return f"{t}__{s}__{int(i):04d}"


def video_candidates(episodes: list[Episode], per_cell: int) -> dict[tuple, list[Episode]]:
    """The first 2*per_cell episodes (manifest order) of each cell: the ones that record frames."""
    cells: dict[tuple, list[Episode]] = {}
    for e in episodes:
        c = cells.setdefault((e.task, e.split), [])
        if len(c) < 2 * per_cell:
            c.append(e)
    return cells if per_cell > 0 else {}


def finalize_videos(out: Path, cells: dict[tuple, list[Episode]], done: dict[tuple, dict], per_cell: int) -> None:
    """Keep up to per_cell videos per finished cell (mixed successes/failures); delete other candidates."""
    cand_dir, vid_dir = out / VIDEOS_DIR / CANDIDATES_DIR, out / VIDEOS_DIR
    for eps in cells.values():
        if not all(e.key in done for e in eps):
            continue  # a resumed run will finish this cell's candidates
        have = [e for e in eps if (cand_dir / f"{video_stem(e)}.mp4").is_file()]
        wins = [e for e in have if is_success(done[e.key])]
        losses = [e for e in have if not is_success(done[e.key])]
        n_win = min(len(wins), max(-(-per_cell // 2), per_cell - len(losses)))
        keep = set(wins[:n_win]) | set(losses[: per_cell - n_win])
        for e in have:
            src = cand_dir / f"{video_stem(e)}.mp4"
            if e in keep:
                tag = "success" if is_success(done[e.key]) else "failure"
                os.replace(src, vid_dir / f"{video_stem(e)}_{tag}.mp4")
            else:
                src.unlink()
    with contextlib.suppress(OSError):
        cand_dir.rmdir()  # only when empty
