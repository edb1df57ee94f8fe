"""What frozen RT-1 models train on: the frozen trunk as a cacheable frame encoder
(``vlabench.data.features.FrameEncoder``), and the random shift that augments its cached maps."""

from __future__ import annotations

import hashlib
import json
import numpy as np
import torch
import torch.nn.functional as F

def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each sample's maps ``(B, T, C, h, w)`` by up to ``pad`` cells each way (replicate padding; the
    same shift for the T frames of a sample), DrQ's random shift applied to feature maps."""
    B, T, C, h, w = x.shape
    padded = F.pad(x.reshape(B, T * C, h, w), (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B)).tolist()
    return torch.stack([padded[b, :, y:y + h, z:z + w] for b, (y, z) in enumerate(zip(dy, dx))]).view(B, T, C, h, w)


class TrunkEncoder:
    """The frozen trunk of an RT-1 model as a ``vlabench.data.features.FrameEncoder``: centre crop, resize,
    normalize, stem + frozen blocks, float16. Its fingerprint hashes the trunk's weights and the
    preprocessing, so a cache built for other weights or sizes is never read."""

    def __init__(self, model: torch.nn.Module, stream: str = "image") -> None:
        self.model, self.stream = model, stream
        c = model.cfg
        self._spec = {"backbone": c.backbone, "frozen_blocks": c.frozen_blocks, "image_size": c.image_size,
                      "crop_scale": c.crop_scale}
        h = hashlib.sha256(json.dumps(self._spec, sort_keys=True).encode())
        for k, v in sorted(model.image_encoder.trunk_state().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        self._fingerprint = h.hexdigest()

    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> dict:
        return {"family": "rt1", **self._spec}

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        m = self.model
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)[:, None]
        images = m.preprocess(x, train=False)[:, 0]
        return m.image_encoder.trunk(images).to(torch.float16).cpu().numpy()  # frozen modules stay in eval mode
