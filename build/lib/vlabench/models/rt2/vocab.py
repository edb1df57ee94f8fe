"""Which token ids the RT-2-style model uses for its 256 action bins.

RT-2 writes an action as text: seven integers, one per action dimension, each a 256-way bin of the
normalized action (vlabench.models.action_tokenizer). The language model emits those as ordinary
vocabulary tokens, so each bin needs a token id that ordinary text never produces. Two modes:

``"reuse"`` (default): take ids the tokenizer never emits for normal text.
    * WordPiece vocabularies (BERT, all-MiniLM-L6-v2) hold ``[unusedN]`` placeholder tokens (994 in
      MiniLM's 30,522-id vocabulary, ids 1..998 minus the five specials). Bin ``b`` -> the id of
      ``[unused{b}]``. The basic tokenizer splits ``[`` ``unused`` ``]`` apart, so no text maps to them.
    * Any other tokenizer (SentencePiece, byte-level BPE): the *least-used* ids, approximated as in
      RT-2/PaLM-E and OpenVLA by the tail of the base vocabulary: walk down from
      ``tokenizer.vocab_size - 1``, skip every special id and every added token, keep 256 ids, and
      assign them to bins in ascending id order (``skip_tail`` ids at the very end can be left alone
      first, e.g. PaliGemma's <seg> tokens). This is sound for large vocabularies (Llama,
      Gemma) whose tail holds rare merges; it is NOT sound for a small vocabulary trained on your
      own text, whose tail merges are common. Use :meth:`RT2Vocab.collisions` on a corpus to check.

``"add"``: ``tokenizer.add_tokens(["<act_000>", ..., "<act_255>"])`` (MiniVLA / Qwen recipes), then
    the caller grows the embedding matrix with ``model.resize_token_embeddings``.

Vocabulary arithmetic (the OpenVLA pitfall: these three numbers differ):
    * ``tokenizer.vocab_size``: the BASE vocabulary only; it EXCLUDES tokens added with
      ``add_tokens``/``add_special_tokens`` (MiniLM: 30,522 in both modes).
    * ``len(tokenizer)``: base + added tokens (MiniLM "add" mode: 30,522 + 256 = 30,778).
    * embedding rows (``model.get_input_embeddings().num_embeddings``): what the model can score. It
      must be >= ``len(tokenizer)`` and may be larger, because ``resize_token_embeddings(n,
      pad_to_multiple_of=64)`` pads for speed (30,778 -> 30,784). Rows >= ``len(tokenizer)`` are never
      produced by the tokenizer; decoding masks them out.
    :attr:`RT2Vocab.min_rows` is the row count the model needs (``len(tokenizer)``).

Input ids and labels are always built directly from ids (:meth:`action_target`,
:meth:`answer_target`): decoding actions to text and re-encoding does not round-trip for BPE
tokenizers (openvla/openvla#246).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

N_BINS = 256
ACTION_DIM = 7
TOKEN_MODES = ("reuse", "add")
ADDED_TOKEN_FORMAT = "<act_{:03d}>"
_UNUSED_RE = re.compile(r"^\[unused(\d+)\]$")


def _special_ids(tokenizer) -> set[int]:
    ids = {int(i) for i in tokenizer.all_special_ids if i is not None}
    ids.update(int(i) for i in tokenizer.get_added_vocab().values())
    return ids


def _unused_wordpiece_ids(tokenizer, n: int) -> list[int] | None:
    """Ids of ``[unused0]..[unused{n-1}]`` if the vocabulary has at least ``n`` of them."""
    found = {}
    for token, idx in tokenizer.get_vocab().items():
        m = _UNUSED_RE.match(token)
        if m:
            found[int(m.group(1))] = int(idx)
    if len(found) < n:
        return None
    return [found[k] for k in sorted(found)[:n]]


def _tail_ids(tokenizer, n: int, skip_tail: int = 0) -> list[int]:
    """The last ``n`` non-special ids of the base vocabulary below ``vocab_size - skip_tail``, ascending."""
    special = _special_ids(tokenizer)
    out: list[int] = []
    idx = int(tokenizer.vocab_size) - 1 - skip_tail
    while idx >= 0 and len(out) < n:
        if idx not in special:
            out.append(idx)
        idx -= 1
    if len(out) < n:
        raise ValueError(f"vocabulary of {tokenizer.vocab_size} ids has fewer than {n} non-special ids")
    return sorted(out)


class RT2Vocab:
    """Bin <-> token-id mapping plus the text-side ids (EOS, placeholder) the model needs.

    Build with :meth:`build`, which in ``"add"`` mode mutates the tokenizer (adds 256 tokens; calling
    it again on the same tokenizer reuses them). Afterwards resize the model's embeddings to at least
    :attr:`min_rows`.
    """

    def __init__(self, tokenizer, action_ids: Sequence[int], mode: str) -> None:
        if len(action_ids) != N_BINS or len(set(action_ids)) != N_BINS:
            raise ValueError(f"need {N_BINS} distinct action ids, got {len(set(action_ids))}")
        self.tokenizer = tokenizer
        self.mode = mode
        self.action_ids = [int(i) for i in action_ids]
        self._id_to_bin = {i: b for b, i in enumerate(self.action_ids)}
        self.eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if self.eos_id is None:
            raise ValueError("tokenizer has neither an eos_token nor a sep_token to end answers with")
        self.bos_id = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        # Parallel decoding feeds content-free slots; [MASK] is the natural one for BERT vocabularies.
        for cand in (tokenizer.mask_token_id, tokenizer.unk_token_id, self.pad_id):
            if cand is not None:
                self.placeholder_id = int(cand)
                break
        if set(self.action_ids) & {self.eos_id, self.pad_id, self.placeholder_id}:
            raise ValueError("action ids overlap the eos/pad/placeholder ids")

    @classmethod
    def build(cls, tokenizer, mode: str = "reuse", skip_tail: int = 0) -> "RT2Vocab":
        """Choose the 256 action ids for ``tokenizer`` in ``mode`` ("reuse" | "add").

        ``skip_tail``: "reuse" on a non-WordPiece vocabulary leaves this many ids at the very end alone
        (pi0-FAST skips 128 on PaliGemma, whose base vocabulary ends in the <seg> tokens).
        """
        if mode == "reuse":
            ids = _unused_wordpiece_ids(tokenizer, N_BINS) or _tail_ids(tokenizer, N_BINS, skip_tail)
        elif mode == "add":
            tokens = [ADDED_TOKEN_FORMAT.format(b) for b in range(N_BINS)]
            tokenizer.add_tokens(tokens)  # no-op for tokens already present (reloaded tokenizers)
            ids = tokenizer.convert_tokens_to_ids(tokens)
        else:
            raise ValueError(f"unknown token_mode {mode!r}; valid: {', '.join(TOKEN_MODES)}")
        return cls(tokenizer, ids, mode)

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def min_rows(self) -> int:
        """Embedding rows the model needs: ``len(tokenizer)`` (base + added tokens)."""
        return max(len(self.tokenizer), max(self.action_ids) + 1)

    def describe(self, embedding_rows: int | None = None) -> dict:
        """The vocabulary arithmetic, for logs and docs."""
        return {
            "mode": self.mode,
            "tokenizer.vocab_size": int(self.tokenizer.vocab_size),
            "len(tokenizer)": len(self.tokenizer),
            "embedding_rows": embedding_rows,
            "action_id_range": [min(self.action_ids), max(self.action_ids)],
            "eos_id": self.eos_id,
        }

    # -- actions -------------------------------------------------------------------------------
    def bins_to_ids(self, bins: torch.Tensor) -> torch.Tensor:
        """Bins ``(..., 7)`` in [0, 256) -> token ids ``(..., 7)`` (same device)."""
        table = torch.tensor(self.action_ids, dtype=torch.long, device=bins.device)
        return table[bins.long()]

    def ids_to_bins(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``(..., 7)`` -> bins; raises ValueError on any non-action id."""
        flat = ids.detach().cpu().reshape(-1).tolist()
        bad = [i for i in flat if i not in self._id_to_bin]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are not action ids (range {min(self.action_ids)}..{max(self.action_ids)})")
        return torch.tensor([self._id_to_bin[i] for i in flat], dtype=torch.long).reshape(ids.shape).to(ids.device)

    def action_target(self, bins: torch.Tensor) -> torch.Tensor:
        """Bins ``(B, 7)`` -> decoder targets ``(B, 8)``: the 7 action ids then EOS."""
        ids = self.bins_to_ids(bins)
        eos = torch.full((ids.shape[0], 1), self.eos_id, dtype=torch.long, device=ids.device)
        return torch.cat([ids, eos], dim=1)

    def action_mask(self, rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool ``(rows,)``: True at the 256 action ids (constrained decoding keeps only these)."""
        mask = torch.zeros(rows, dtype=torch.bool, device=device)
        mask[torch.tensor(self.action_ids, device=device)] = True
        return mask

    # -- text ----------------------------------------------------------------------------------
    def text_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens (CLS/BOS/SEP are added by the model)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def answer_target(self, answer: str) -> list[int]:
        """Decoder target for a VQA answer: its ids then EOS."""
        return self.text_ids(answer) + [self.eos_id]

    def text_mask(self, rows: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Bool ``(rows,)`` of ids free-text decoding may emit.

        Excluded: action ids (the prompt asked a question, not for an action), rows past
        ``len(tokenizer)`` (embedding padding), and pad/BOS/placeholder ids.
        """
        mask = torch.ones(rows, dtype=torch.bool, device=device)
        mask[len(self.tokenizer):] = False
        mask[torch.tensor(self.action_ids, device=device)] = False
        for i in (self.pad_id, self.bos_id, self.placeholder_id):
            if i is not None and i != self.eos_id and i < rows:
                mask[i] = False
        return mask

    def decode_text(self, ids: Iterable[int]) -> str:
        """Generated ids -> text, stopping at the first EOS."""
        out = []
        for i in ids:
            if int(i) == self.eos_id:
                break
            out.append(int(i))
        return self.tokenizer.decode(out, skip_special_tokens=True).strip()

    def collisions(self, texts: Iterable[str]) -> set[int]:
        """Action ids that tokenizing ``texts`` produces (must be empty for a usable vocabulary)."""
        action = set(self.action_ids)
        hit: set[int] = set()
        for t in texts:
            hit.update(action.intersection(self.tokenizer(t, add_special_tokens=True)["input_ids"]))
        return hit
