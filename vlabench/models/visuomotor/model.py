"""``visuomotor``: a feature-point policy on frozen pretrained features, the CPU-cheap vision reference.

After Levine, Finn et al. 2016 ("End-to-End Training of Deep Visuomotor Policies"): conv layers, a spatial
softmax that turns each map into the image coordinate of what it responds to, and a fully connected
controller on those points and the robot's state; the vision layers learn object positions from pose labels
next to the action loss (here the auxiliary geometry loss of ``vlabench.models.blocks.aux_geometry``;
privileged state is a training label only, never an input).

What runs per camera (front, and the wrist with ``use_wrist``), on the current frame:

- the packaged ImageNet EfficientNet-Lite0 up to ``feature_stride`` (8: a 16 x 16 x 40 map of a 128 px
  front frame, 11 x 11 of the 84 px wrist frame), frozen and at the camera's own resolution, so training
  reads it from the feature cache (``vlabench.data.features``) and never runs it;
- two 3x3 convs of ``channels``, each GroupNorm -> FiLM on the instruction's sentence embedding -> ReLU: the
  instruction decides which object the maps light up on;
- a 1x1 conv to ``keypoints`` maps and a spatial softmax: ``keypoints`` (x, y) points, plus the mean of the
  last conv map.

The controller is the state-MLP's (``vlabench.models.state_mlp``): the current frame's points, the last
``n_obs_steps`` proprioceptive states (min-max normalized; two show whether the arm has stopped) and a
projection of the instruction -> ``hidden`` ReLU layers -> a chunk of ``horizon`` actions, L1 on min-max
normalized actions, executed with temporal ensembling. The geometry head reads the points and the current
state (one hidden layer), so the points have to say where the target and the goal are. Points of earlier
frames would double the cost of the convs, which are most of a training step.

``geometry_input`` also feeds that head's estimate to the controller: perception first, then the kind of
input the state-MLP ceiling learns from. The demos align the hand over the target in the first one or two
steps (a pick demo is 16 steps long) and hold it aligned afterwards, so behaviour cloning from points alone
learns "no sideways motion" for nearly every frame; an explicit target-minus-hand estimate, supervised on
every frame, gives the controller the offset that the sideways action is a function of.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlabench.contracts import ACTION_DIM, STATE_DIM
from vlabench.models.blocks.aux_geometry import AUX_FIELD_COLUMNS, AUX_INDEX, aux_geometry_loss, aux_limits
from vlabench.models.blocks.film_efficientnet import BACKBONES, FiLM, FilmEfficientNet
from vlabench.models.blocks.normalize import minmax_limits
from vlabench.models.blocks.spatial_softmax import SpatialSoftmax
from vlabench.models.blocks.text_encoder import get_sentence_encoder
from vlabench.models.blocks.trunk_features import TrunkEncoder, random_shift
from vlabench.models.configs import PresetConfig

PRESETS: dict[str, dict[str, Any]] = {
    "base": dict(backbone="lite0", pretrained=True, channels=32, keypoints=16, hidden=(512, 512)),
    "tiny": dict(backbone="tiny", pretrained=False, channels=8, keypoints=4, hidden=(16,)),
}
TEXT_DEVICE = "cpu"  # as RT-1: one cached sentence-encoder forward per distinct instruction


@dataclass
class VisuomotorConfig(PresetConfig):
    """Hyperparameters of the feature-point policy. Fields left unset (None) take the value of ``preset``:
    "base" (pretrained Lite0, the lite recipe) or "tiny" (tests)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = PRESETS
    TUPLE_FIELDS: ClassVar[tuple[str, ...]] = ("hidden",)
    backbone: str | None = None
    """Frozen trunk: "lite0" (packaged ImageNet weights with ``pretrained``) or "tiny" (tests)."""
    pretrained: bool | None = None
    """Load the packaged ImageNet Lite0 weights into the trunk."""
    backbone_weights: str | None = None
    """Optional local state-dict file for the trunk's backbone."""
    feature_stride: int = 8
    """Stride of the frozen trunk's map (8 or 16); finer maps locate objects more precisely."""
    use_wrist: bool = True
    """Also read the wrist camera (its own conv head; the trunk is shared)."""
    n_obs_steps: int = 2
    """Proprioceptive states fed per prediction, t-n_obs_steps+1 .. t (the points are the current frame's)."""
    horizon: int = 8
    """Actions predicted per step (a chunk a_t .. a_{t+horizon-1})."""
    channels: int | None = None
    """Width of the two FiLM-conditioned 3x3 convs (a multiple of 8; preset: base 32)."""
    keypoints: int | None = None
    """Feature points per camera (preset: base 16)."""
    hidden: tuple[int, ...] | None = None
    """Controller hidden widths (preset: base 512, 512)."""
    lang_dim: int = 32
    """Width of the instruction's projection fed to the controller."""
    feature_shift: int = 1
    """Random shift of the cached trunk maps in training, up to this many cells each way (0 = none)."""
    aux_privileged: float = 1.0
    """Weight of the auxiliary geometry loss (training only; 0 = behaviour cloning alone)."""
    geometry_from_front: bool = False
    """The geometry head reads the front camera's points only, not the wrist's and not the state; the
    target-minus-hand offset is its target estimate minus the hand's position from the state. The front
    camera is fixed and sees the whole table, so where the target and the goal are is one function of where
    they appear in it, supervised on every frame. A head that also reads the state learns the shortcut
    "the target is under the hand", true on nearly every demo frame, and locates the target 7-11 cm off
    (RMS, held out) on the first frame, where the demos make their sideways move."""
    geometry_offset_weight: float = 0.0
    """Weight each frame's geometry loss by 1 + this x the target's horizontal distance from the hand (per
    10 cm). The target is under the hand on nearly every demo frame, so an unweighted loss is met by
    locating the hand; the frames where it is not (the first ones, where the demos move sideways) are
    the ones the policy needs. 0 = unweighted."""
    geometry_input: bool = False
    """Feed the geometry head's estimate (where the target and the goal are, and their offsets from the
    hand) to the controller too: perception, then the state-MLP's kind of input. Needs ``aux_privileged``."""
    text_encoder: str | None = None
    """Sentence encoder: None = packaged all-MiniLM-L6-v2, a local model path, or "hash" (tests only)."""

    def validate(self, r: "VisuomotorConfig") -> None:
        if r.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {r.backbone!r}; known: {', '.join(BACKBONES)}")
        if r.feature_stride not in (8, 16):
            raise ValueError(f"feature_stride must be 8 or 16, got {r.feature_stride}")
        for key in ("n_obs_steps", "horizon", "keypoints", "lang_dim"):
            if getattr(r, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(r, key)}")
        if r.channels < 8 or r.channels % 8:
            raise ValueError(f"channels must be a positive multiple of 8, got {r.channels}")
        if not r.hidden or any(int(h) < 1 for h in r.hidden):
            raise ValueError(f"hidden must be a non-empty list of positive widths, got {r.hidden!r}")
        if (r.geometry_input or r.geometry_from_front) and not r.aux_privileged:
            raise ValueError("geometry_input and geometry_from_front need the geometry head: set aux_privileged > 0")
        if r.geometry_offset_weight < 0:
            raise ValueError(f"geometry_offset_weight must be >= 0, got {r.geometry_offset_weight}")
        if r.feature_shift < 0 or r.aux_privileged < 0:
            raise ValueError(f"feature_shift and aux_privileged must be >= 0, got {r.feature_shift}, {r.aux_privileged}")

    def for_loading(self) -> "VisuomotorConfig":
        return dataclasses.replace(self, pretrained=False, backbone_weights=None)


class PointHead(nn.Module):
    """One camera's trunk map + instruction embedding -> ``(N, 2 * keypoints + channels)``: the points, then
    the mean of the last conv map."""

    def __init__(self, in_channels: int, channels: int, keypoints: int, cond_dim: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(in_channels, channels, 3, padding=1),
                                    nn.Conv2d(channels, channels, 3, padding=1)])
        self.norms = nn.ModuleList([nn.GroupNorm(8, channels) for _ in self.convs])
        self.films = nn.ModuleList([FiLM(cond_dim, channels) for _ in self.convs])
        self.points = nn.Conv2d(channels, keypoints, 1)
        self.softmax = SpatialSoftmax()

    def forward(self, trunk: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x = trunk
        for conv, norm, film in zip(self.convs, self.norms, self.films):
            x = F.relu(film(norm(conv(x)), cond))
        return torch.cat([self.softmax(self.points(x)).flatten(1), x.mean((2, 3))], dim=1)


class VisuomotorModel(nn.Module):
    """See the module docstring. ``forward(trunks, instructions, state) -> (normalized chunk, geometry)``."""

    def __init__(self, cfg: VisuomotorConfig, stats: Mapping) -> None:
        super().__init__()
        self.cfg = cfg = cfg.resolved()
        text_dim = get_sentence_encoder(cfg.text_encoder, TEXT_DEVICE).dim
        # Only the trunk (stem + every block up to the stride, frozen) is used; the wrapper's small 1x1
        # projection and final FiLM stay unused.
        self.image_encoder = FilmEfficientNet(cfg.backbone, cond_dim=text_dim, token_dim=8, pretrained=cfg.pretrained,
                                              weights_path=cfg.backbone_weights, feature_stride=cfg.feature_stride,
                                              frozen_blocks=-1)
        self.cameras = ("image", "wrist_image") if cfg.use_wrist else ("image",)
        c_in = self.image_encoder.trunk_channels
        self.heads = nn.ModuleDict({cam: PointHead(c_in, cfg.channels, cfg.keypoints, text_dim) for cam in self.cameras})
        for key, dim in (("action", ACTION_DIM), ("state", STATE_DIM)):
            center, half = minmax_limits(stats, key, dim)
            self.register_buffer(f"{key}_center", center)
            self.register_buffer(f"{key}_half_range", half)
        point_dim = len(self.cameras) * (2 * cfg.keypoints + cfg.channels)
        self.lang = nn.Linear(text_dim, cfg.lang_dim)
        layers: list[nn.Module] = []
        width = point_dim + cfg.n_obs_steps * STATE_DIM + cfg.lang_dim + (len(AUX_INDEX) if cfg.geometry_input else 0)
        for h in cfg.hidden:
            layers += [nn.Linear(width, int(h)), nn.ReLU()]
            width = int(h)
        layers.append(nn.Linear(width, cfg.horizon * ACTION_DIM))
        self.controller = nn.Sequential(*layers)
        if cfg.aux_privileged:
            center, half = aux_limits(stats)
            self.register_buffer("aux_center", center)
            self.register_buffer("aux_half_range", half)
            geo_dim = 2 * cfg.keypoints + cfg.channels if cfg.geometry_from_front else point_dim + STATE_DIM
            self.aux_head = nn.Sequential(nn.Linear(geo_dim, 256), nn.ReLU(), nn.Linear(256, len(AUX_INDEX)))

    @property
    def device(self) -> torch.device:
        return self.action_center.device

    def text_embedding(self, instructions: list[str]) -> torch.Tensor:
        return get_sentence_encoder(self.cfg.text_encoder, TEXT_DEVICE).embed(list(instructions)).to(self.device)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 ``(N, 3, H, W)`` at the camera's own resolution -> the trunk's normalized float input."""
        return self.image_encoder.normalize(frames.to(self.device, torch.float32) / 255.0)

    def trunk_encoder(self, stream: str = "image") -> TrunkEncoder:
        """The frozen trunk as the feature cache's frame encoder for ``stream``."""
        return TrunkEncoder(self.image_encoder, self.preprocess, {"family": "visuomotor", "resize": None}, stream)

    @torch.inference_mode()
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Live uint8 frames ``(N, 3, H, W)`` -> trunk maps, rounded to float16 as the training cache stores them."""
        return self.image_encoder.trunk(self.preprocess(frames)).to(torch.float16)

    def data_spec(self) -> dict:
        """DemoDataset kwargs: cached trunk maps of each camera instead of frames (the dataset serves
        ``n_obs_steps`` of them; the model reads the last); privileged state as the geometry label."""
        return {"n_obs": self.cfg.n_obs_steps, "horizon": self.cfg.horizon, "image_keys": (),
                "features": {cam: self.trunk_encoder(cam) for cam in self.cameras},
                "privileged": bool(self.cfg.aux_privileged)}

    def points(self, trunks: Mapping[str, torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        """Current trunk maps ``{camera: (B, C, h, w)}`` and embeddings ``(B, D)`` -> ``(B, n_cameras * (2 *
        keypoints + channels))``: each camera's points, then its pooled map."""
        parts = []
        for cam in self.cameras:
            if cam not in trunks:
                raise KeyError(f"this visuomotor model reads the {cam!r} camera")
            x = trunks[cam].to(self.device, torch.float32)
            if x.ndim != 4:
                raise ValueError(f"{cam} trunk maps must be (B, C, h, w), got {tuple(x.shape)}")
            if self.training and self.cfg.feature_shift:
                x = random_shift(x[:, None], self.cfg.feature_shift)[:, 0]
            parts.append(self.heads[cam](x, cond))
        return torch.cat(parts, dim=1)

    def forward(self, trunks: Mapping[str, torch.Tensor], instructions: list[str],
                state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Current trunk maps ``{camera: (B, C, h, w)}``, B instructions, states ``(B, n_obs_steps, 8)`` (oldest
        first) -> normalized action chunk ``(B, horizon, 7)`` and normalized geometry ``(B, 12)`` (None without
        the geometry head)."""
        if state.ndim != 3 or state.shape[1:] != (self.cfg.n_obs_steps, STATE_DIM):
            raise ValueError(f"state must be (B, {self.cfg.n_obs_steps}, {STATE_DIM}), got {tuple(state.shape)}")
        if len(instructions) != state.shape[0]:
            raise ValueError(f"got {len(instructions)} instructions for a batch of {state.shape[0]}")
        cond = self.text_embedding(instructions)
        state = (state.to(self.device, torch.float32) - self.state_center) / self.state_half_range
        points = self.points(trunks, cond)
        geometry = None
        if self.cfg.aux_privileged and self.cfg.geometry_from_front:  # the front camera's points come first
            geometry = self.front_geometry(points[:, : 2 * self.cfg.keypoints + self.cfg.channels], state[:, -1])
        elif self.cfg.aux_privileged:
            geometry = self.aux_head(torch.cat([points, state[:, -1]], dim=1))
        x = torch.cat([points, state.flatten(1), self.lang(cond)] + ([geometry] if self.cfg.geometry_input else []), dim=1)
        chunk = self.controller(x).view(x.shape[0], self.cfg.horizon, ACTION_DIM)
        return chunk, geometry

    def front_geometry(self, front_points: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """``geometry_from_front``: the head's estimate from the front points, with the target-minus-hand entries
        replaced by (its target estimate - the hand's position); ``state`` is the normalized current state."""
        raw = self.aux_head(front_points) * self.aux_half_range + self.aux_center
        hand = state[:, :3] * self.state_half_range[:3] + self.state_center[:3]
        t, d = AUX_FIELD_COLUMNS["target_pos"], AUX_FIELD_COLUMNS["target_minus_ee"]
        raw = torch.cat([raw[:, : d.start], raw[:, t] - hand, raw[:, d.stop:]], dim=1)
        return (raw - self.aux_center) / self.aux_half_range

    def predict_action_chunk(self, trunks: Mapping[str, torch.Tensor], instructions: list[str],
                             state: torch.Tensor) -> torch.Tensor:
        """Env actions ``(B, horizon, 7)`` in [-1, 1]."""
        chunk, _ = self(trunks, instructions, state)
        return (chunk * self.action_half_range + self.action_center).clamp(-1.0, 1.0)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """L1 on the normalized chunk (padded steps left out) + ``aux_privileged`` x the geometry MSE. batch:
        ``<camera>_features`` (B, T, C, h, w) (the last frame is read), state (B, T, 8), instruction, action (B, H, 7), action_is_pad,
        privileged (B, T, P) with the geometry head."""
        trunks = {cam: batch[f"{cam}_features"][:, -1] for cam in self.cameras if f"{cam}_features" in batch}
        chunk, geometry = self(trunks, list(batch["instruction"]), batch["state"])
        target = ((batch["action"].to(self.device).float() - self.action_center) / self.action_half_range).clamp(-1, 1)
        if target.shape[1] != self.cfg.horizon:
            raise ValueError(f"batch['action'] has {target.shape[1]} steps, the model predicts horizon={self.cfg.horizon}")
        err = F.l1_loss(chunk, target, reduction="none").mean(-1)
        keep = (~batch["action_is_pad"].to(self.device)).float()
        loss = (err * keep).sum() / keep.sum().clamp(min=1.0)
        metrics = {"l1": float(loss.detach())}
        if geometry is not None:
            aux, aux_metrics = aux_geometry_loss(geometry, batch["privileged"], self.aux_center, self.aux_half_range,
                                                 self.cfg.geometry_offset_weight)
            loss = loss + self.cfg.aux_privileged * aux
            metrics.update(aux_metrics)
        metrics["loss"] = float(loss.detach())
        return loss, metrics
