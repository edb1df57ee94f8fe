"""MP4 writing shared by replay and evaluation videos (imageio + the ffmpeg binary of imageio-ffmpeg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlabench.fileio import atomic_path


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """The frame with ``text`` drawn in a strip below it."""
    from PIL import Image, ImageDraw

    h, w = frame.shape[:2]
    canvas = Image.new("RGB", (w, h + 16), "black")
    canvas.paste(Image.fromarray(frame), (0, 0))
    ImageDraw.Draw(canvas).text((3, h + 2), text, fill="white")
    return np.asarray(canvas)


def write_mp4(path: Path | str, frames: list[np.ndarray], fps: int = 10) -> Path:
    """Write frames (H, W, 3) uint8 to an MP4 atomically; sides are padded to even sizes for yuv420p."""
    import imageio.v2 as imageio

    if not len(frames):
        raise ValueError(f"no frames to write to {path}")
    path = Path(path)
    h, w = frames[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    with atomic_path(path, suffix=".mp4") as tmp:  # ffmpeg picks the container from the extension
        with imageio.get_writer(tmp, fps=fps, codec="libx264", quality=8, macro_block_size=1,
                                ffmpeg_log_level="error") as writer:
            for f in frames:
                if (ph, pw) != (h, w):
                    f = np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)))
                writer.append_data(f)
    return path
