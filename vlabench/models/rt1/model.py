"""RT-1-style policy: FiLM-EfficientNet + TokenLearner + block-causal Transformer over 6 frames.

Follows google-research/robotics_transformer (Brohan et al. 2022, "RT-1") with these choices:

- Language: a frozen all-MiniLM-L6-v2 sentence embedding (384-d, packaged offline) replaces RT-1's
  512-d Universal Sentence Encoder; it conditions every FiLM layer of the image encoder.
- Image encoder: EfficientNet-Lite0 with ImageNet weights by default (B3 as in RT-1 is an option, but
  no B3 weights ship offline); a FiLM after every MBConv block, 1x1 conv to the model width, final FiLM.
- TokenLearner v1.1: 8 tokens per frame; learned position embeddings over the 6 x 8 tokens.
- Transformer: standard pre-LN encoder layers (GELU MLP, head dim d/heads) instead of RT-1's
  activation-free single-Dense feed-forward and one-hot positions, with a block-causal mask (tokens of
  frame t attend to frames <= t). RT-1 zeroes its action-token inputs, so its 11 action dimensions are
  effectively predicted in parallel from image tokens; here the last frame's tokens are mean-pooled and
  one linear layer gives all 7 x 256 logits at once (as lucidrains' port does).
- Actions: the shared 256-bin ActionTokenizer (q01/q99 normalization, bin centres, no floor bias);
  cross-entropy on a_t; argmax decoding at inference.
- Augmentation: a random crop of ``crop_scale`` of each side (the same crop for all frames of
  a sample) at train time, the centre crop of the same size at eval, then a resize to ``image_size``.

At inference the policy caches each slot's per-frame tokens (RT-1's ``network_state``), so each step
encodes one new frame per env instead of six.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlabench.contracts import ACTION_DIM, STATE_DIM
from vlabench.models.blocks.action_tokenizer import ActionTokenizer
from vlabench.models.blocks.aux_geometry import AUX_INDEX, aux_geometry_loss, aux_limits
from vlabench.models.blocks.film_efficientnet import BACKBONES, FilmEfficientNet
from vlabench.models.blocks.normalize import minmax_limits
from vlabench.models.blocks.text_encoder import get_sentence_encoder
from vlabench.models.blocks.token_learner import TokenLearner
from vlabench.models.configs import PresetConfig
from vlabench.models.blocks.trunk_features import TrunkEncoder, random_shift

PRESETS: dict[str, dict] = {
    # RT-1 paper sizes (8 layers, width 512, 8 heads, dropout 0.1) on a pretrained Lite0 at 224 px.
    "base": dict(n_layers=8, d_model=512, n_heads=8, dropout=0.1, image_size=224, backbone="lite0", pretrained=True,
                 feature_stride=32),
    # Small enough to train a few hundred steps on a laptop CPU.
    "small": dict(n_layers=2, d_model=128, n_heads=4, dropout=0.0, image_size=96, backbone="tiny", pretrained=False,
                  feature_stride=16),
}
# The sentence encoder always runs on CPU: with the per-string cache it costs one forward per distinct
# instruction, it is bit-identical between training and evaluation machines, and only one copy is held.
TEXT_DEVICE = "cpu"


@dataclass
class RT1Config(PresetConfig):
    """RT-1-style model hyperparameters. Fields left as None take the value of ``preset``:
    "base" (paper sizes, pretrained Lite0) or "small" (CPU demo/tests)."""

    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    n_layers: int | None = None
    """Transformer layers (base 8, small 2)."""
    d_model: int | None = None
    """Transformer width, also the image token width (base 512, small 128)."""
    n_heads: int | None = None
    """Attention heads (base 8, small 4)."""
    dropout: float | None = None
    """Dropout in the Transformer layers (base 0.1, small 0.0)."""
    image_size: int | None = None
    """Square side the cropped frames are resized to before the image encoder (base 224, small 96)."""
    backbone: str | None = None
    """Image backbone: "lite0" (EfficientNet-Lite0), "b3" (EfficientNet-B3, RT-1's) or "tiny" (tests/demo)."""
    pretrained: bool | None = None
    """Load the packaged ImageNet weights (lite0 only; b3 needs backbone_weights)."""
    backbone_weights: str | None = None
    """Optional local state-dict file for the backbone (e.g. timm efficientnet_b3 weights)."""
    n_frames: int = 6
    """Frames of history the policy sees (RT-1: 6); also the dataset's n_obs."""
    tokens_per_frame: int = 8
    """TokenLearner tokens per frame (RT-1: 8)."""
    n_bins: int = 256
    """Action bins per dimension."""
    text_encoder: str | None = None
    """Sentence encoder: None = packaged all-MiniLM-L6-v2, a local model path, or "hash" (tests only)."""
    crop_scale: float = 0.9
    """Crop side as a fraction of the image side: random position in training, centred at eval (1.0 = no crop)."""
    feature_stride: int | None = None
    """Stride of the image feature map (base 32: the whole EfficientNet; small 16: a 6x6 map at 96 px)."""
    spatial_pos: bool = True
    """Add fixed 2-D sine-cosine position codes to the feature map before TokenLearner, so tokens say
    where they looked. RT-1 relies on position leaking through padding of a 9x9 map; at CPU sizes the
    map is 3x3, and without the codes a small model learns an open-loop, time-indexed trajectory."""
    frozen_blocks: int = 0
    """Freeze the image encoder's stem and first k MBConv blocks (no FiLM on them, BatchNorm in eval mode).
    Training then computes their output once per frame and caches it with the dataset
    (vlabench.data.features), so a step runs only the FiLM-conditioned rest: the lite recipe freezes every
    block (k = the count up to ``feature_stride``), which leaves the 1x1 projection, the final FiLM,
    TokenLearner and the Transformer to train. Frozen, the crop is always the centred one.
    0 = train everything (RT-1's choice)."""
    feature_shift: int = 0
    """With ``frozen_blocks``: random-shift augmentation of the cached trunk map in training, by up to this
    many cells each way (replicate padding, one shift per sample for all its frames), standing in for the
    random crop, which a cache cannot apply. 0 = none."""
    action_horizon: int = 1
    """Actions predicted per step (a_t .. a_{t+H-1}, 7 x n_bins logits each, cross-entropy over the steps
    inside the episode); the policy ensembles overlapping chunks (ACT's temporal ensembling).
    1 = RT-1's single action."""
    use_wrist: bool = False
    """Also encode the wrist camera (same image encoder and TokenLearner, its own learned camera embedding):
    each frame then has 2 x ``tokens_per_frame`` tokens. RT-1 had one camera; the reference policies lose
    10-45% success without a wrist view."""
    use_state: bool = False
    """Add a linear embedding of the proprioceptive ``state`` (end-effector pose and gripper, min-max
    normalized with the dataset's stats) to every token of its frame."""
    aux_privileged: float = 0.0
    """Weight of an auxiliary loss, training only: regress the current frame's scene geometry
    (``vlabench.models.blocks.aux_geometry.AUX_FIELDS`` of the privileged state: the target's and the goal's positions and their offsets from the gripper and
    from each other, min-max normalized) from the pooled tokens with one linear layer, next to the action
    loss. It asks the image tokens to say where things are, the part behaviour cloning alone learns last
    (Levine et al. 2016 pretrain their visuomotor policy's vision layers on object pose). The policy never
    sees privileged state: the head is unused at inference. 0 = off (RT-1's loss)."""

    def validate(self, r: "RT1Config") -> None:
        _validate(vars(r))

    def for_loading(self) -> "RT1Config":
        return dataclasses.replace(self, pretrained=False, backbone_weights=None)


def _validate(c: dict) -> None:
    if c["backbone"] not in BACKBONES:
        raise ValueError(f"unknown backbone {c['backbone']!r}; known: {', '.join(BACKBONES)}")
    if c["d_model"] % c["n_heads"]:
        raise ValueError(f"d_model {c['d_model']} must be divisible by n_heads {c['n_heads']}")
    if not 0.0 < c["crop_scale"] <= 1.0:
        raise ValueError(f"crop_scale must be in (0, 1], got {c['crop_scale']}")
    for key in ("n_layers", "n_frames", "tokens_per_frame", "image_size", "n_heads", "action_horizon"):
        if c[key] < 1:
            raise ValueError(f"{key} must be >= 1, got {c[key]}")
    if c["n_bins"] < 2:
        raise ValueError(f"n_bins must be >= 2, got {c['n_bins']}")
    if c["frozen_blocks"] < 0 or c["feature_shift"] < 0:
        raise ValueError(f"frozen_blocks and feature_shift must be >= 0, got {c['frozen_blocks']}, {c['feature_shift']}")
    if not 0.0 <= c["dropout"] < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {c['dropout']}")


@functools.lru_cache(maxsize=8)
def sincos_2d(dim: int, h: int, w: int) -> torch.Tensor:
    """Fixed position codes ``(dim, h, w)``: a quarter of the channels each for sin/cos of the row and of
    the column coordinate (in [-1, 1]) at geometric frequencies; leftover channels stay zero."""
    n = dim // 4
    # Lowest frequency: a quarter turn each side of the centre, so sin is monotonic over the map and
    # no two rows (columns) share a code; higher ones (up to 8x) resolve neighbours.
    freqs = torch.pi / 2 * 2.0 ** torch.linspace(0, 3, n) if n else torch.zeros(0)
    ys, xs = torch.linspace(-1, 1, h), torch.linspace(-1, 1, w)
    ay, ax = freqs[:, None] * ys[None], freqs[:, None] * xs[None]  # (n, h), (n, w)
    out = torch.zeros(dim, h, w)
    out[0 * n:1 * n] = ay.sin()[:, :, None].expand(n, h, w)
    out[1 * n:2 * n] = ay.cos()[:, :, None].expand(n, h, w)
    out[2 * n:3 * n] = ax.sin()[:, None, :].expand(n, h, w)
    out[3 * n:4 * n] = ax.cos()[:, None, :].expand(n, h, w)
    return out


def block_causal_mask(n_frames: int, tokens_per_frame: int) -> torch.Tensor:
    """Bool ``(T*S, T*S)`` attention mask, True = blocked: a token of frame t sees only frames <= t."""
    frame = torch.arange(n_frames).repeat_interleave(tokens_per_frame)
    return frame[None, :] > frame[:, None]


class RT1Model(nn.Module):
    """RT-1-style network. ``forward(frames (B, T, 3, H, W) uint8, instructions) -> logits (B, 7, n_bins)``."""

    def __init__(self, cfg: RT1Config, stats: dict) -> None:
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        self.stats = stats
        self.tokenizer = ActionTokenizer(stats, n_bins=cfg.n_bins)
        text_dim = get_sentence_encoder(cfg.text_encoder, TEXT_DEVICE).dim
        self.image_encoder = FilmEfficientNet(
            cfg.backbone, cond_dim=text_dim, token_dim=cfg.d_model, pretrained=cfg.pretrained,
            weights_path=cfg.backbone_weights, feature_stride=cfg.feature_stride, frozen_blocks=cfg.frozen_blocks,
        )
        self.token_learner = TokenLearner(cfg.d_model, cfg.tokens_per_frame)
        self.cameras = ("image", "wrist_image") if cfg.use_wrist else ("image",)
        self.frame_tokens = cfg.tokens_per_frame * len(self.cameras)
        self.pos_emb = nn.Parameter(torch.randn(cfg.n_frames * self.frame_tokens, cfg.d_model) * 0.02)
        if cfg.use_wrist:
            self.camera_emb = nn.Parameter(torch.randn(len(self.cameras), cfg.d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model, cfg.n_heads, dim_feedforward=4 * cfg.d_model, dropout=cfg.dropout,
            activation="gelu", batch_first=True, norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, cfg.action_horizon * ACTION_DIM * cfg.n_bins)
        if cfg.use_state:
            center, half = minmax_limits(stats, "state", STATE_DIM)
            self.register_buffer("state_center", center)
            self.register_buffer("state_half_range", half)
            self.state_proj = nn.Linear(STATE_DIM, cfg.d_model)
        if cfg.aux_privileged:
            center, half = aux_limits(stats)
            self.register_buffer("aux_center", center)
            self.register_buffer("aux_half_range", half)
            self.aux_head = nn.Linear(cfg.d_model, len(AUX_INDEX))
        self.register_buffer("attn_mask", block_causal_mask(cfg.n_frames, self.frame_tokens), persistent=False)

    # -- pieces (the policy calls them separately to cache per-frame tokens) --------------------
    @property
    def device(self) -> torch.device:
        return self.pos_emb.device

    def text_embedding(self, instructions: list[str]) -> torch.Tensor:
        """Frozen sentence embeddings ``(B, text_dim)`` on the model's device."""
        return get_sentence_encoder(self.cfg.text_encoder, TEXT_DEVICE).embed(list(instructions)).to(self.device)

    def preprocess(self, frames: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 frames ``(B, T, 3, H, W)`` -> normalized float ``(B, T, 3, s, s)``, s = image_size.

        Crops ``crop_scale`` of each side (random per sample in training, shared by its T frames;
        centred otherwise), then resizes with antialiasing.
        """
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        B, T, _, H, W = frames.shape
        ch, cw = max(1, round(H * self.cfg.crop_scale)), max(1, round(W * self.cfg.crop_scale))
        if train and not self.cfg.frozen_blocks and (ch < H or cw < W):  # frozen: the cache holds centre crops
            tops = torch.randint(0, H - ch + 1, (B,)).tolist()
            lefts = torch.randint(0, W - cw + 1, (B,)).tolist()
            frames = torch.stack([frames[b, :, :, t : t + ch, l : l + cw] for b, (t, l) in enumerate(zip(tops, lefts))])
        else:
            t, l = (H - ch) // 2, (W - cw) // 2
            frames = frames[..., t : t + ch, l : l + cw]
        x = frames.reshape(B * T, 3, ch, cw).to(self.device, torch.float32) / 255.0
        s = self.cfg.image_size
        if (ch, cw) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return self.image_encoder.normalize(x).reshape(B, T, 3, s, s)

    def encode_frames(self, images: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Preprocessed images ``(N, 3, s, s)`` + embeddings ``(N, text_dim)`` -> tokens ``(N, S, d)``. A frozen
        trunk's output is rounded to float16, as the training cache stores it."""
        trunk = self.image_encoder.trunk(images)
        if self.cfg.frozen_blocks:
            trunk = trunk.to(torch.float16)
        return self.encode_trunk(trunk, cond)

    def encode_trunk(self, trunk: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The image encoder's ``trunk`` output ``(N, C, h, w)`` (live, or cached in training) + embeddings
        -> tokens ``(N, S, d)``."""
        fmap = self.image_encoder.forward_features(trunk.to(self.device, torch.float32), cond)
        if self.cfg.spatial_pos:
            fmap = fmap + sincos_2d(fmap.shape[1], fmap.shape[2], fmap.shape[3]).to(fmap)
        return self.token_learner(fmap)

    def add_state(self, tokens: torch.Tensor, state: torch.Tensor | None) -> torch.Tensor:
        """With ``use_state``: tokens ``(B, T, S, d)`` + the embedding of ``state`` ``(B, T, 8)`` on each of a
        frame's tokens; otherwise the tokens unchanged."""
        if not self.cfg.use_state:
            return tokens
        if state is None:
            raise ValueError("this RT-1 model was trained with use_state=True: pass the proprioceptive state")
        x = (state.to(self.device, torch.float32) - self.state_center) / self.state_half_range
        return tokens + self.state_proj(x)[:, :, None, :]

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-frame tokens ``(B, T, S, d)`` with T = n_frames -> the Transformer's output for the current
        frame, mean-pooled over its tokens ``(B, d)``."""
        B, T, S, d = tokens.shape
        if (T, S) != (self.cfg.n_frames, self.frame_tokens):
            raise ValueError(f"tokens must be (B, {self.cfg.n_frames}, {self.frame_tokens}, d), got {tuple(tokens.shape)}")
        x = tokens.reshape(B, T * S, d) + self.pos_emb
        x = self.norm(self.transformer(x, mask=self.attn_mask))
        return x[:, -S:].mean(dim=1)

    def action_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """Pooled ``(B, d)`` -> action logits ``(B, action_horizon, 7, n_bins)``."""
        return self.head(pooled).view(pooled.shape[0], self.cfg.action_horizon, ACTION_DIM, self.cfg.n_bins)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-frame tokens ``(B, T, S, d)`` with T = n_frames -> action logits ``(B, action_horizon, 7, n_bins)``."""
        return self.action_logits(self.pool_tokens(tokens))

    def camera_tokens(self, frames: torch.Tensor | None, cond: torch.Tensor, trunk: torch.Tensor | None = None) -> torch.Tensor:
        """One camera's frames ``(B, T, 3, H, W)`` uint8, or its cached ``trunk`` ``(B, T, C, h, w)`` (frozen
        models), + embeddings ``(B*T, text_dim)`` -> tokens ``(B, T, tokens_per_frame, d)``."""
        B, T = (frames if trunk is None else trunk).shape[:2]
        if trunk is None:
            tokens = self.encode_frames(self.preprocess(frames, train=self.training).flatten(0, 1), cond)
        else:
            if not self.cfg.frozen_blocks:
                raise ValueError("trunk features need a model with frozen_blocks > 0")
            trunk = trunk.to(self.device, torch.float32)
            if self.training and self.cfg.feature_shift:
                trunk = random_shift(trunk, self.cfg.feature_shift)
            tokens = self.encode_trunk(trunk.flatten(0, 1), cond)
        return tokens.view(B, T, *tokens.shape[1:])

    def join_cameras(self, per_camera: list[torch.Tensor]) -> torch.Tensor:
        """Tokens ``(B, T, S, d)`` of each camera in ``self.cameras`` order -> ``(B, T, frame_tokens, d)``."""
        if len(per_camera) == 1:
            return per_camera[0]
        return torch.cat([t + self.camera_emb[i] for i, t in enumerate(per_camera)], dim=2)

    def forward(self, frames: torch.Tensor | None, instructions: list[str], state: torch.Tensor | None = None,
                trunk: torch.Tensor | None = None, wrist: torch.Tensor | None = None,
                wrist_trunk: torch.Tensor | None = None) -> torch.Tensor:
        """frames ``(B, T, 3, H, W)`` uint8 (oldest first), or ``trunk`` ``(B, T, C, h, w)`` (cached trunk
        features, frozen models only); with ``use_wrist`` also ``wrist`` or ``wrist_trunk``; instructions ``B``
        strings; ``state`` ``(B, T, 8)`` for ``use_state`` -> logits ``(B, action_horizon, 7, n_bins)``."""
        return self.action_logits(self.pooled(frames, instructions, state, trunk, wrist, wrist_trunk))

    def pooled(self, frames: torch.Tensor | None, instructions: list[str], state: torch.Tensor | None = None,
               trunk: torch.Tensor | None = None, wrist: torch.Tensor | None = None,
               wrist_trunk: torch.Tensor | None = None) -> torch.Tensor:
        """``forward``'s inputs -> the pooled current-frame representation ``(B, d)`` the heads read."""
        B, T = (frames if trunk is None else trunk).shape[:2]
        if len(instructions) != B:
            raise ValueError(f"got {len(instructions)} instructions for a batch of {B}")
        cond = self.text_embedding(instructions).repeat_interleave(T, dim=0)
        per_camera = [self.camera_tokens(frames, cond, trunk)]
        if self.cfg.use_wrist:
            if wrist is None and wrist_trunk is None:
                raise ValueError("this RT-1 model was trained with use_wrist=True: pass the wrist frames")
            per_camera.append(self.camera_tokens(wrist, cond, wrist_trunk))
        return self.pool_tokens(self.add_state(self.join_cameras(per_camera), state))

    # -- training-loop interface --------------------------------------------------------------
    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross-entropy on the tokenized a_t .. a_{t+H-1} (steps past the episode's end left out). batch:
        image (B, T, 3, H, W) uint8 or, frozen, image_features (B, T, C, h, w); action (B, H, 7);
        action_is_pad (B, H); state (B, T, 8); instruction."""
        trunk = batch.get("image_features")
        frames = batch["image"] if trunk is None else trunk
        if frames.shape[1] != self.cfg.n_frames:
            raise ValueError(f"the batch has {frames.shape[1]} frames, the model expects n_frames={self.cfg.n_frames}")
        H = self.cfg.action_horizon
        targets = self.tokenizer.encode(batch["action"][:, :H]).to(self.device)  # (B, H, 7)
        if targets.shape[1] != H:
            raise ValueError(f"batch['action'] has {targets.shape[1]} steps, the model predicts action_horizon={H}")
        pad = batch.get("action_is_pad")
        keep = torch.ones(targets.shape[:2], device=self.device) if pad is None else (~pad[:, :H]).float().to(self.device)
        wrist_trunk = batch.get("wrist_image_features")
        wrist = batch.get("wrist_image") if wrist_trunk is None else None
        pooled = self.pooled(None if trunk is not None else frames, batch["instruction"], batch.get("state"), trunk,
                             wrist, wrist_trunk)
        logits = self.action_logits(pooled)
        ce = F.cross_entropy(logits.reshape(-1, self.cfg.n_bins), targets.reshape(-1), reduction="none")
        w = keep[:, :, None].expand_as(targets).reshape(-1)
        loss = (ce * w).sum() / w.sum().clamp(min=1.0)
        hit = (logits.detach().argmax(-1) == targets).float().reshape(-1)
        acc = (hit * w).sum() / w.sum().clamp(min=1.0)
        metrics = {"loss": float(loss.detach()), "token_acc": float(acc)}
        if self.cfg.aux_privileged:
            aux, aux_metrics = aux_geometry_loss(self.aux_head(pooled), batch["privileged"], self.aux_center,
                                                 self.aux_half_range)
            metrics.update(action_loss=metrics["loss"], **aux_metrics)
            loss = loss + self.cfg.aux_privileged * aux
            metrics["loss"] = float(loss.detach())
        return loss, metrics

    def trunk_encoder(self, stream: str = "image") -> TrunkEncoder:
        """The frozen trunk with this model's eval preprocessing, as the cache's frame encoder for ``stream``."""
        c = self.cfg
        return TrunkEncoder(self.image_encoder, lambda x: self.preprocess(x[:, None], train=False)[:, 0],
                            {"family": "rt1", "image_size": c.image_size, "crop_scale": c.crop_scale}, stream)

    def data_spec(self) -> dict:
        """DemoDataset kwargs: n_frames of history, action_horizon actions; a frozen model reads cached
        trunk features instead of frames."""
        spec = {"n_obs": self.cfg.n_frames, "horizon": self.cfg.action_horizon, "goal_offset": None,
                "image_keys": self.cameras}
        if self.cfg.frozen_blocks:
            spec.update(image_keys=(), features={cam: self.trunk_encoder(cam) for cam in self.cameras})
        if self.cfg.aux_privileged:
            spec["privileged"] = True
        return spec
