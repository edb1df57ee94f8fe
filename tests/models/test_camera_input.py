"""camera_frames: the camera check every image policy's act shares."""

import numpy as np
import pytest

from vlabench.models.blocks.camera_input import camera_frames


def test_camera_frames_channels_first_or_one_clear_error():
    frames = np.arange(2 * 4 * 5 * 3, dtype=np.uint8).reshape(2, 4, 5, 3)
    out = camera_frames({"image": frames}, "image", "RT-1")
    assert tuple(out.shape) == (2, 3, 4, 5) and int(out[1, 2, 3, 4]) == int(frames[1, 3, 4, 2])
    with pytest.raises(KeyError, match=r"this RT-1 model reads obs_batch\['wrist_image'\]"):
        camera_frames({"image": frames}, "wrist_image", "RT-1")
    with pytest.raises(ValueError, match=r"must be \(n, H, W, 3\) uint8, got \(4, 5, 3\)"):
        camera_frames({"image": frames[0]}, "image", "visuomotor")
