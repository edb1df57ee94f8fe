"""RT-2-style vision-language-action model: actions are text tokens of a vision-language model.

One front-camera frame and the prompt ``"What action should the robot take to {instruction}?"`` go
into a vision-language model, which answers with 7 action tokens and EOS (256 bins per dimension,
vlabench.models.blocks.action_tokenizer: q01/q99-normalized deltas, raw gripper; decoded at bin centers).
The loss is next-token cross-entropy on those 8 answer positions only. Decoding is greedy with logits
masked to the 256 action ids, so even an untrained model always emits a valid action.

Backbones (``backbone``):
  * ``"minilm-pali"`` (offline default): a PaLI-style encoder-decoder built from the packaged
    all-MiniLM-L6-v2 and a vision tower (vlabench.models.rt2.pali).
  * ``"hf"``: any Hugging Face image-text-to-text model at ``hf_path``, optionally with LoRA
    (vlabench.models.rt2.hf).
Action-token ids: vlabench.models.rt2.vocab (``token_mode`` "reuse" or "add").

Co-fine-tuning (RT-2): with ``cotrain_ratio > 0`` the model owns a VQA sample source, the ``.npz``
that ``vlabench vqa-gen`` (vlabench.data.vqa) generates from simulator scenes (``vqa_data``). Each
``compute_loss`` call draws ``max(1, round(B * cotrain_ratio))`` VQA samples (B = robot batch size)
with the global torch RNG (seeded by the training loop) and returns
``action_loss + vqa_loss_weight * vqa_loss``; both appear in the metrics. In eval mode (validation)
the loss is the action loss alone. VQA answers are free text, decoded greedily until EOS with the
action ids masked out instead (``RT2Model.answer``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from vlabench.contracts import ACTION_DIM
from vlabench.models.blocks.action_tokenizer import ActionTokenizer
from vlabench.models.configs import PresetConfig

PROMPT = "What action should the robot take to {instruction}?"
BACKBONES = ("minilm-pali", "hf")
PRESETS = {"small": {"image_size": 128, "decoder_layers": 2}, "base": {"image_size": 224, "decoder_layers": 6}}


@dataclass
class RT2Config(PresetConfig):
    """Hyperparameters of the RT-2-style model. ``preset`` "small" (128 px, 2 decoder layers;
    CPU-friendly) or "base" (224 px, 6 decoder layers) fills image_size / decoder_layers when unset."""

    PRESETS: ClassVar[dict[str, dict]] = PRESETS
    backbone: str = "minilm-pali"
    """"minilm-pali" (offline PaLI-style MiniLM encoder-decoder) or "hf" (a Hugging Face VLM at hf_path)."""
    text_model_path: str | None = None
    """minilm-pali only: None = packaged all-MiniLM-L6-v2; a local BERT-family directory; "tiny" = tiny
    random BERT with the MiniLM tokenizer (tests only)."""
    decoder_layers: int | None = None
    """minilm-pali only: decoder depth, warm-started from the text model's first layers (None = preset)."""
    vision_tower: str = "efficientnet-lite0"
    """minilm-pali only: "efficientnet-lite0" (packaged ImageNet weights), "open_clip" (needs
    open_clip_weights), or "tiny" (random, tests only)."""
    vision_pretrained: bool = True
    """Load the packaged EfficientNet-Lite0 ImageNet weights (False = random init)."""
    freeze_vision: bool = False
    """minilm-pali only: keep the vision tower's weights fixed; the projector and the language model train."""
    open_clip_model: str = "ViT-B-32"
    """open_clip architecture name for vision_tower="open_clip"."""
    open_clip_weights: str | None = None
    """Local open_clip checkpoint file for vision_tower="open_clip" (nothing is downloaded)."""
    image_size: int | None = None
    """Side in pixels the (cropped) front image is resized to (None = preset; minilm-pali only, the
    hf processor resizes to its own size)."""
    crop_scale: float = 0.9
    """Area fraction of the random training crop / centered eval crop (1.0 = no crop)."""
    token_mode: str = "reuse"
    """Action ids: "reuse" ([unusedN] ids of WordPiece, else the vocabulary tail) or "add" (256 new tokens)."""
    reuse_skip_tail: int = 0
    """token_mode="reuse" on a non-WordPiece vocabulary: leave this many ids at the end of the base
    vocabulary alone before taking the 256-id tail (128 for PaliGemma's <seg> tokens, as pi0-FAST)."""
    parallel_decode: bool = False
    """Predict all 7 action tokens in one decoder pass from placeholder inputs (trained the same way)."""
    cotrain_ratio: float = 0.0
    """VQA samples per robot sample mixed into each batch (0 = robot data only)."""
    vqa_loss_weight: float = 0.5
    """Weight of the VQA loss in the total loss."""
    vqa_data: str | None = None
    """.npz written by `vlabench vqa-gen` (vlabench.data.vqa) (required when cotrain_ratio > 0)."""
    max_answer_tokens: int = 8
    """Longest free-text answer decoded by `answer`, in tokens (EOS excluded)."""
    hf_path: str | None = None
    """backbone="hf": local directory or hub id for AutoProcessor + AutoModelForImageTextToText."""
    hf_dtype: str = "float32"
    """backbone="hf": weight dtype, "float32" (fp32 master weights; the loop's bf16 autocast still
    applies) | "bfloat16" (half the memory, e.g. with LoRA) | "float16" | "auto" (as saved)."""
    lora_rank: int = 0
    """backbone="hf": LoRA rank on all linear layers (0 = full fine-tuning)."""
    lora_alpha: int | None = None
    """backbone="hf": LoRA alpha (None = min(rank, 16), as OpenVLA)."""

    def validate(self, r: "RT2Config") -> None:
        if r.backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {r.backbone!r}; valid: {', '.join(BACKBONES)}")
        if r.freeze_vision and r.backbone != "minilm-pali":
            raise ValueError("freeze_vision applies to backbone='minilm-pali' only (use lora_rank for 'hf')")
        if not 0.0 <= r.cotrain_ratio:
            raise ValueError(f"cotrain_ratio must be >= 0, got {r.cotrain_ratio}")

    def for_loading(self) -> "RT2Config":
        return dataclasses.replace(self, vision_pretrained=False)


class VQASource:
    """In-memory VQA samples: uint8 images ``(M, H, W, 3)`` and (image index, question, answer) rows."""

    def __init__(self, images: np.ndarray, image_index: np.ndarray, questions: list[str], answers: list[str]) -> None:
        if len(questions) == 0:
            raise ValueError("VQA source holds no questions")
        self.images = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)  # (M, 3, H, W)
        self.image_index = np.asarray(image_index, dtype=np.int64)
        self.questions, self.answers = list(questions), list(answers)

    @classmethod
    def from_file(cls, path: str | Path) -> "VQASource":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["images"], z["image_index"], z["question"].tolist(), z["answer"].tolist())

    @classmethod
    def from_samples(cls, samples: list[tuple[np.ndarray, str, str]]) -> "VQASource":
        """From ``(image (H, W, 3) uint8, question, answer)`` triples."""
        return cls(np.stack([s[0] for s in samples]), np.arange(len(samples)), [s[1] for s in samples],
                   [s[2] for s in samples])

    def __len__(self) -> int:
        return len(self.questions)

    def sample(self, n: int) -> tuple[torch.Tensor, list[str], list[str]]:
        """``n`` random rows (global torch RNG) -> images ``(n, 3, H, W)`` uint8, questions, answers."""
        rows = torch.randint(0, len(self), (n,)).tolist()
        return (self.images[self.image_index[rows]], [self.questions[r] for r in rows],
                [self.answers[r] for r in rows])


def to_chw_uint8(images) -> torch.Tensor:
    """Images ``(B, H, W, 3)`` (numpy or torch, as in observations) or ``(B, 3, H, W)`` -> uint8 torch ``(B, 3, H, W)``."""
    t = torch.as_tensor(np.asarray(images)) if not torch.is_tensor(images) else images
    if t.ndim != 4:
        raise ValueError(f"images must be (B, H, W, 3) or (B, 3, H, W), got shape {tuple(t.shape)}")
    if t.shape[-1] == 3 and t.shape[1] != 3:
        t = t.permute(0, 3, 1, 2)
    return t.to(torch.uint8)


def action_prompt(instruction: str) -> str:
    return PROMPT.format(instruction=instruction.strip().rstrip(".?!").strip())


class RT2Model(nn.Module):
    """The training-side model: ``compute_loss``, ``predict_bins``/``predict_actions``, ``answer``."""

    def __init__(self, cfg: RT2Config, stats: dict) -> None:
        super().__init__()
        self.cfg = cfg.resolved()
        self.stats = stats
        self.action_tokenizer = ActionTokenizer(stats)
        if self.cfg.backbone == "minilm-pali":
            from vlabench.models.rt2.pali import PaliBackbone

            self.backbone = PaliBackbone(self.cfg)
        else:
            from vlabench.models.rt2.hf import HFBackbone

            self.backbone = HFBackbone(self.cfg)
        self.vocab = self.backbone.vocab
        self.vqa_source: VQASource | None = None
        if self.cfg.cotrain_ratio > 0 and not self.cfg.vqa_data:
            raise ValueError("cotrain_ratio > 0 needs vqa_data (an .npz from `vlabench vqa-gen` (vlabench.data.vqa)), "
                             "or set cotrain_ratio = 0")

    def data_spec(self) -> dict:
        return {"n_obs": 1, "horizon": 1, "goal_offset": None, "image_keys": ("image",)}

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _vqa(self) -> VQASource:
        if self.vqa_source is None:
            self.vqa_source = VQASource.from_file(self.cfg.vqa_data)
        return self.vqa_source

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, float]]:
        """``batch``: image ``(B, 1, 3, H, W)`` uint8, action ``(B, 1, 7)``, instruction list[str]."""
        images = batch["image"][:, -1]
        bins = self.action_tokenizer.encode(batch["action"][:, 0].float())  # (B, 7)
        targets = self.vocab.action_target(bins.to(images.device))  # (B, 8): 7 actions + EOS
        prompts = [action_prompt(s) for s in batch["instruction"]]
        action_loss, acc = self.backbone.loss(images, prompts, targets, parallel=self.cfg.parallel_decode)
        loss = action_loss
        metrics = {"action_loss": float(action_loss.detach()), "action_token_acc": float(acc)}
        # Only in training: the validation loss stays action-only, so co-trained and robot-only runs
        # report comparable numbers (and validation draws no random VQA samples).
        if self.cfg.cotrain_ratio > 0 and self.training:
            n = max(1, round(images.shape[0] * self.cfg.cotrain_ratio))
            vimg, questions, answers = self._vqa().sample(n)
            vqa_loss, vacc = self.vqa_loss(vimg.to(images.device), questions, answers)
            loss = loss + self.cfg.vqa_loss_weight * vqa_loss
            metrics.update(vqa_loss=float(vqa_loss.detach()), vqa_token_acc=float(vacc))
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def vqa_loss(self, images: torch.Tensor, questions: list[str], answers: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Answer-token cross-entropy for uint8 images ``(n, 3, H, W)`` -> (loss, token accuracy)."""
        targets = [self.vocab.answer_target(a) for a in answers]
        return self.backbone.loss(images, list(questions), targets, parallel=False)

    @torch.no_grad()
    def predict_bins(self, images, instructions: list[str]) -> torch.Tensor:
        """Constrained greedy decoding -> action bins ``(B, 7)`` in [0, 256)."""
        allowed = self.vocab.action_mask(self.backbone.rows, self._device())
        prompts = [action_prompt(s) for s in instructions]
        ids = self.backbone.generate(to_chw_uint8(images), prompts, ACTION_DIM, allowed,
                                     parallel=self.cfg.parallel_decode)
        return self.vocab.ids_to_bins(ids)

    @torch.no_grad()
    def predict_actions(self, images, instructions: list[str]) -> np.ndarray:
        """Images ``(B, H, W, 3)`` or ``(B, 3, H, W)`` uint8 + instructions -> float32 env actions ``(B, 7)``."""
        return self.action_tokenizer.decode(self.predict_bins(images, instructions).cpu())

    @torch.no_grad()
    def answer(self, images, questions: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Free-text answers (greedy, stops at EOS); images as in :meth:`predict_actions`."""
        was_training = self.training
        self.eval()
        try:
            allowed = self.vocab.text_mask(self.backbone.rows, self._device())
            ids = self.backbone.generate(to_chw_uint8(images), list(questions),
                                         (max_new_tokens or self.cfg.max_answer_tokens) + 1, allowed,
                                         parallel=False, stop_at_eos=True)
        finally:
            self.train(was_training)
        return [self.vocab.decode_text(row.tolist()) for row in ids]
