"""Offline PaLI-style encoder-decoder assembled from the packaged all-MiniLM-L6-v2.

PaLI (the RT-2 backbone family) encodes ``[image tokens; text tokens]`` with one transformer and
decodes the answer with a cross-attending decoder. Here:

* vision tower patch features ``(B, N, C)`` -> learned 2-layer MLP projector -> ``(B, N, 384)``;
* the MiniLM encoder reads ``inputs_embeds = [image tokens; word embeddings of "[CLS] prompt [SEP]"]``
  (BERT adds its position embeddings; image tokens get token type 1, text type 0);
* a decoder warm-started from the same MiniLM checkpoint (its first ``decoder_layers`` layers), with
  causal self-attention and freshly initialised cross-attention, reads ``[CLS] + previous answer
  tokens``. It has no word embeddings of its own: it is fed the encoder's word embeddings, and the
  output layer is ``transform(h) @ word_embeddings.T + bias``, so input and output embeddings are one
  matrix and the state dict holds no shared tensors (plain ``safetensors.save_file`` works).

Parallel decoding (OpenVLA-OFT style): the decoder input is ``[CLS] + 7 [MASK]`` placeholders and all
action tokens come out of ONE decoder pass. The placeholders carry no content, so the causal mask
leaves each slot with only its position embedding and cross-attention to the image/instruction:
slot ``i`` learns to predict action dimension ``i``. Training uses the same placeholders.

``text_model_path="tiny"`` builds a tiny random BERT (2 layers, width 32) with the real MiniLM
tokenizer, for tests.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from vlabench.models.rt2.vision import VisionTower
from vlabench.models.rt2.vocab import RT2Vocab

TINY_TEXT = "tiny"


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load reports and progress bars (missing cross-attention weights are expected)."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def masked_greedy(logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Argmax of ``logits`` ``(..., V)`` over ids where ``allowed`` ``(V,)`` is True."""
    return logits.masked_fill(~allowed, float("-inf")).argmax(-1)


def target_loss(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-mean cross-entropy and accuracy; ``logits`` ``(B, T, V)``, ``targets`` ``(B, T)`` (-100 = ignore)."""
    loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
    valid = targets != -100
    acc = ((logits.argmax(-1) == targets) & valid).sum() / valid.sum().clamp(min=1)
    return loss, acc.detach()


def pad_targets(targets: list[list[int]], device: torch.device) -> torch.Tensor:
    """Ragged id lists -> ``(B, T)`` long, right-padded with -100."""
    width = max(len(t) for t in targets)
    out = torch.full((len(targets), width), -100, dtype=torch.long)
    for i, t in enumerate(targets):
        out[i, : len(t)] = torch.tensor(t, dtype=torch.long)
    return out.to(device)


class PaliBackbone(nn.Module):
    """MiniLM encoder-decoder with a vision tower. See the module docstring for the layout."""

    def __init__(self, cfg) -> None:
        super().__init__()
        from transformers import AutoTokenizer, BertConfig, BertModel

        from vlabench.models.blocks.text_encoder import default_minilm_path

        path = cfg.text_model_path
        tok_path = default_minilm_path() if path in (None, TINY_TEXT) else path
        self.tokenizer = AutoTokenizer.from_pretrained(tok_path)
        self.vocab = RT2Vocab.build(self.tokenizer, cfg.token_mode, cfg.reuse_skip_tail)
        with quiet_transformers():
            if path == TINY_TEXT:
                small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=128, vocab_size=self.tokenizer.vocab_size)  # base vocab:
                # "add" mode then takes the same resize path as a real checkpoint
                self.encoder = BertModel(BertConfig(**small), add_pooling_layer=False)
                self.decoder = BertModel(BertConfig(**small, is_decoder=True, add_cross_attention=True),
                                         add_pooling_layer=False)
            else:
                src = tok_path
                self.encoder = BertModel.from_pretrained(src, add_pooling_layer=False)
                dcfg = BertConfig.from_pretrained(src, is_decoder=True, add_cross_attention=True,
                                                  num_hidden_layers=cfg.decoder_layers)
                self.decoder = BertModel.from_pretrained(src, config=dcfg, add_pooling_layer=False)
        rows = self.encoder.get_input_embeddings().num_embeddings
        if self.vocab.min_rows > rows:
            self.encoder.resize_token_embeddings(self.vocab.min_rows, pad_to_multiple_of=64)
        # One embedding matrix (the encoder's) serves encoder input, decoder input and output layer.
        self.decoder.embeddings.word_embeddings = None
        d = self.encoder.config.hidden_size
        self.vision = VisionTower(cfg.vision_tower, cfg.image_size, cfg.crop_scale, cfg.vision_pretrained,
                                  cfg.open_clip_model, cfg.open_clip_weights)
        if cfg.freeze_vision:
            self.vision.requires_grad_(False)
        self.projector = nn.Sequential(nn.Linear(self.vision.out_dim, d), nn.GELU(), nn.Linear(d, d))
        self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d, eps=1e-12))
        self.out_bias = nn.Parameter(torch.zeros(self.embed.num_embeddings))

    @property
    def embed(self) -> nn.Embedding:
        return self.encoder.get_input_embeddings()

    @property
    def rows(self) -> int:
        return self.embed.num_embeddings

    # -- encoder -------------------------------------------------------------------------------
    def encode(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 ``(B, 3, H, W)`` + prompts -> memory ``(B, N + L, D)`` and its mask ``(B, N + L)``."""
        dev = self.embed.weight.device
        img = self.projector(self.vision(images.to(dev)))
        tok = self.tokenizer(prompts, padding=True, return_tensors="pt").to(dev)
        txt = self.embed(tok["input_ids"])
        n = img.shape[1]
        mask = torch.cat([torch.ones(img.shape[:2], dtype=tok["attention_mask"].dtype, device=dev),
                          tok["attention_mask"]], dim=1)
        types = torch.cat([torch.ones(img.shape[:2], dtype=torch.long, device=dev),
                           torch.zeros_like(tok["input_ids"])], dim=1)
        if n + txt.shape[1] > self.encoder.config.max_position_embeddings:
            raise ValueError(f"{n} image + {txt.shape[1]} text tokens exceed the encoder's "
                             f"{self.encoder.config.max_position_embeddings} positions; lower image_size")
        memory = self.encoder(inputs_embeds=torch.cat([img, txt], 1), attention_mask=mask,
                              token_type_ids=types).last_hidden_state
        return memory, mask

    def decode(self, dec_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor,
               dec_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Decoder ids ``(B, T)`` -> logits ``(B, T, rows)`` (position t predicts token t+1)."""
        h = self.decoder(inputs_embeds=self.embed(dec_ids), attention_mask=dec_mask,
                         encoder_hidden_states=memory, encoder_attention_mask=memory_mask).last_hidden_state
        return F.linear(self.head(h), self.embed.weight, self.out_bias)

    # -- training ------------------------------------------------------------------------------
    def loss(self, images: torch.Tensor, prompts: list[str], targets: list[list[int]] | torch.Tensor,
             parallel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on the target tokens only; returns (loss, token accuracy).

        ``targets``: per-sample answer ids ending in EOS (``(B, T)`` tensor or ragged lists). The
        decoder reads ``[CLS] + targets[:-1]`` (teacher forcing) or ``[CLS] + placeholders``.
        """
        memory, mmask = self.encode(images, prompts)
        tgt = targets.to(memory.device) if torch.is_tensor(targets) else pad_targets(targets, memory.device)
        dec_in = self._decoder_inputs(tgt, parallel)
        dec_mask = torch.cat([torch.ones_like(tgt[:, :1]), (tgt[:, :-1] != -100).long()], 1)
        return target_loss(self.decode(dec_in, memory, mmask, dec_mask), tgt)

    def _decoder_inputs(self, tgt: torch.Tensor, parallel: bool) -> torch.Tensor:
        bos = torch.full_like(tgt[:, :1], self.vocab.bos_id)
        body = torch.full_like(tgt[:, :-1], self.vocab.placeholder_id) if parallel else tgt[:, :-1]
        return torch.cat([bos, body.masked_fill(body == -100, self.vocab.pad_id)], 1)

    # -- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: list[str], max_new_tokens: int,
                 allowed: torch.Tensor, parallel: bool = False, stop_at_eos: bool = False) -> torch.Tensor:
        """Greedy decoding restricted to ids where ``allowed`` ``(rows,)`` is True -> ids ``(B, max_new_tokens)``.

        Re-runs the decoder on the whole prefix each step (answers are <= a dozen tokens, so a KV
        cache would save little). ``parallel``: one pass over ``[CLS] + placeholders``.
        """
        memory, mmask = self.encode(images, prompts)
        allowed = allowed.to(memory.device)
        b = memory.shape[0]
        if parallel:
            dec = torch.full((b, max_new_tokens), self.vocab.placeholder_id, dtype=torch.long, device=memory.device)
            dec[:, 0] = self.vocab.bos_id
            return masked_greedy(self.decode(dec, memory, mmask), allowed)
        dec = torch.full((b, 1), self.vocab.bos_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(max_new_tokens):
            nxt = masked_greedy(self.decode(dec, memory, mmask)[:, -1], allowed)
            nxt = nxt.masked_fill(done, self.vocab.eos_id)
            dec = torch.cat([dec, nxt[:, None]], 1)
            done |= nxt == self.vocab.eos_id
            if stop_at_eos and bool(done.all()):
                break
        return dec[:, 1:]
