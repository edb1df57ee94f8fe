"""What models with a frozen image trunk train on: the trunk as a cacheable frame encoder
(``vlabench.data.features.FrameEncoder``), and the random shift that augments its cached maps."""

from __future__ import annotations

import hashlib
import json
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from vlabench.models.blocks.film_efficientnet import FilmEfficientNet


def random_shift(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each sample's maps ``(B, T, C, h, w)`` by up to ``pad`` cells each way (replicate padding; the
    same shift for the T frames of a sample), DrQ's random shift applied to feature maps."""
    B, T, C, h, w = x.shape
    padded = F.pad(x.reshape(B, T * C, h, w), (pad, pad, pad, pad), mode="replicate")
    dy, dx = torch.randint(0, 2 * pad + 1, (2, B)).tolist()
    return torch.stack([padded[b, :, y:y + h, z:z + w] for b, (y, z) in enumerate(zip(dy, dx))]).view(B, T, C, h, w)


class TrunkEncoder:
    """The frozen trunk of a ``FilmEfficientNet`` as a ``vlabench.data.features.FrameEncoder``: the model's
    eval-time preprocessing (``preprocess``: uint8 ``(N, 3, H, W)`` -> normalized float), stem + frozen blocks,
    float16. Its fingerprint hashes the trunk's weights and ``spec`` (what the preprocessing depends on), so a
    cache built for other weights or sizes is never read."""

    def __init__(self, encoder: FilmEfficientNet, preprocess: Callable[[torch.Tensor], torch.Tensor], spec: dict,
                 stream: str = "image") -> None:
        self.encoder, self.preprocess, self.stream = encoder, preprocess, stream
        self._spec = {"backbone": encoder.backbone_name, "frozen_blocks": encoder.frozen_blocks, **spec}
        h = hashlib.sha256(json.dumps(self._spec, sort_keys=True).encode())
        for k, v in sorted(encoder.trunk_state().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        self._fingerprint = h.hexdigest()

    def fingerprint(self) -> str:
        return self._fingerprint

    def describe(self) -> dict:
        return dict(self._spec)

    @torch.inference_mode()
    def encode(self, frames: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
        return self.encoder.trunk(self.preprocess(x)).to(torch.float16).cpu().numpy()  # frozen modules stay in eval mode
