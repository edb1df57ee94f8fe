"""RT-2-style model on any Hugging Face vision-language model (``backbone="hf"``).

``hf_path`` is a local directory (or a hub id, where a hub is reachable) loadable with
``AutoProcessor`` + ``AutoModelForImageTextToText``: PaliGemma, SmolVLM/Idefics3, Qwen2-VL, ...
The processor turns (image, prompt) into the model's prompt ids; if it has a chat template the prompt
becomes one user turn ``[image, text]`` with the generation prompt appended, otherwise (PaliGemma) the
prompt is ``processor.image_token + prompt`` and the processor expands the image placeholder.

Sequence layout (decoder-only): ``[left padding | prompt (image + text) | answer ids]``. Prompts are
left-padded so every row's prompt ends at the same column ``L``; answer ids are appended from ids
(never decoded and re-encoded) and right-padded. Position ``L - 1 + t`` predicts answer token ``t``,
and the loss covers only answer tokens (7 action ids + EOS, or a VQA answer + EOS). Left padding
shifts absolute positions of padded rows; rotary position embeddings (all the families above) only
see relative offsets, so this is harmless. Sequence-aligned extra inputs are extended over the answer:
``token_type_ids`` with 1 (PaliGemma: the causal "suffix"), ``mm_token_type_ids`` with 0 (text).

Decoding uses ``model.generate`` (greedy, KV cache) with a logits processor that keeps only allowed
ids: the 256 action ids for actions, text ids for VQA. Parallel decoding appends 6 placeholder ids
and reads all 7 action logits from one forward pass.

LoRA (``lora_rank > 0``, peft): adapters on all linear layers, ``lora_alpha = min(rank, 16)`` unless
set (OpenVLA), dropout 0; the action-id and EOS embedding rows are trained through peft's
``trainable_token_indices`` so added (random) or reused action tokens are learnable.

:func:`build_tiny_paligemma` writes a tiny random PaliGemma plus a locally trained BPE tokenizer and
processor to a directory, for tests and smoke runs with no download.
"""

from __future__ import annotations

import inspect
import string
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from vlabench.models.rt2.pali import masked_greedy, pad_targets, quiet_transformers, target_loss
from vlabench.models.rt2.vision import crop_images
from vlabench.models.rt2.vocab import RT2Vocab

_DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFBackbone(nn.Module):
    """Wraps ``AutoModelForImageTextToText`` with the same ``loss``/``generate`` API as PaliBackbone."""

    def __init__(self, cfg) -> None:
        super().__init__()
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not cfg.hf_path:
            raise ValueError("backbone='hf' needs hf_path: a local model directory or hub id")
        if cfg.hf_dtype not in _DTYPES:
            raise ValueError(f"unknown hf_dtype {cfg.hf_dtype!r}; valid: {', '.join(_DTYPES)}")
        with quiet_transformers():
            self.processor = AutoProcessor.from_pretrained(cfg.hf_path)
            model = AutoModelForImageTextToText.from_pretrained(cfg.hf_path, dtype=_DTYPES[cfg.hf_dtype])
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"  # prompts end in the same column; see module docstring
        self.vocab = RT2Vocab.build(self.tokenizer, cfg.token_mode, cfg.reuse_skip_tail)
        if self.vocab.min_rows > model.get_input_embeddings().num_embeddings:
            model.resize_token_embeddings(self.vocab.min_rows, pad_to_multiple_of=64)
        self._takes_logits_to_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._rows = model.get_input_embeddings().num_embeddings  # before peft wraps the embedding
        if cfg.lora_rank > 0:
            from peft import LoraConfig, get_peft_model

            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha or min(cfg.lora_rank, 16),
                              lora_dropout=0.0, target_modules="all-linear",
                              trainable_token_indices=self.vocab.action_ids + [self.vocab.eos_id])
            model = get_peft_model(model, lora)
        self.model = model
        self.crop_scale = cfg.crop_scale

    @property
    def rows(self) -> int:
        return self._rows

    def _format(self, prompt: str) -> str:
        if getattr(self.processor, "chat_template", None):
            turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            return self.processor.apply_chat_template(turn, add_generation_prompt=True, tokenize=False)
        # No template (PaliGemma): lead with the image placeholder, which the processor expands.
        return getattr(self.processor, "image_token", "") + prompt

    def _inputs(self, images: torch.Tensor, prompts: list[str]) -> dict[str, torch.Tensor]:
        """uint8 ``(B, 3, H, W)`` + prompts -> processor outputs on the model's device (left-padded)."""
        crops = crop_images(images, self.training, self.crop_scale)
        arrays = [np.ascontiguousarray(im.permute(1, 2, 0).cpu().numpy()) for im in crops]
        with warnings.catch_warnings():  # PaliGemma's processor trips a numpy-2 copy= deprecation on every call
            warnings.simplefilter("ignore", DeprecationWarning)
            batch = self.processor(images=[[a] for a in arrays], text=[self._format(p) for p in prompts],
                                   return_tensors="pt", padding=True)
        batch.pop("labels", None)  # PaliGemma's processor derives labels from the prompt; ours come from ids
        param = next(self.model.parameters())
        out = {}
        for k, v in batch.items():
            v = v.to(param.device)
            out[k] = v.to(param.dtype) if v.is_floating_point() else v
        return out

    @staticmethod
    def _extend(inputs: dict[str, torch.Tensor], body: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Append ``body`` ids ``(B, T)`` (attention ``mask``) to the prompt inputs."""
        out = dict(inputs)
        out["input_ids"] = torch.cat([inputs["input_ids"], body], 1)
        out["attention_mask"] = torch.cat([inputs["attention_mask"], mask.to(inputs["attention_mask"].dtype)], 1)
        for key, fill in (("token_type_ids", 1), ("mm_token_type_ids", 0)):
            if key in inputs:
                out[key] = torch.cat([inputs[key], torch.full_like(body, fill).to(inputs[key].dtype)], 1)
        return out

    def _logits(self, full: dict[str, torch.Tensor], keep: int) -> torch.Tensor:
        """Logits of the last ``keep`` positions ``(B, keep, V)``."""
        if self._takes_logits_to_keep:
            full = {**full, "logits_to_keep": keep}
        return self.model(**full).logits[:, -keep:]

    def loss(self, images: torch.Tensor, prompts: list[str], targets: list[list[int]] | torch.Tensor,
             parallel: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy on answer tokens only -> (loss, token accuracy). ``targets`` end with EOS."""
        inputs = self._inputs(images, prompts)
        dev = inputs["input_ids"].device
        tgt = targets.to(dev) if torch.is_tensor(targets) else pad_targets(targets, dev)
        body = tgt[:, :-1]
        mask = body != -100
        body = torch.full_like(body, self.vocab.placeholder_id) if parallel else body.masked_fill(~mask, self.vocab.pad_id)
        logits = self._logits(self._extend(inputs, body, mask), tgt.shape[1])
        return target_loss(logits, tgt)

    @torch.no_grad()
    def generate(self, images: torch.Tensor, prompts: list[str], max_new_tokens: int,
                 allowed: torch.Tensor, parallel: bool = False, stop_at_eos: bool = False) -> torch.Tensor:
        """Greedy decoding over ids where ``allowed`` ``(rows,)`` is True -> ids ``(B, max_new_tokens)``."""
        from transformers import LogitsProcessor, LogitsProcessorList

        inputs = self._inputs(images, prompts)
        dev = inputs["input_ids"].device
        allowed = allowed.to(dev)
        b = inputs["input_ids"].shape[0]
        if parallel:
            body = torch.full((b, max_new_tokens - 1), self.vocab.placeholder_id, dtype=torch.long, device=dev)
            logits = self._logits(self._extend(inputs, body, torch.ones_like(body)), max_new_tokens)
            return masked_greedy(logits, allowed[: logits.shape[-1]])

        class _Allowed(LogitsProcessor):
            def __call__(self, input_ids, scores):
                return scores.masked_fill(~allowed[: scores.shape[-1]], float("-inf"))

        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=0, do_sample=False,
                                  logits_processor=LogitsProcessorList([_Allowed()]),
                                  eos_token_id=self.vocab.eos_id, pad_token_id=self.vocab.pad_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        if new.shape[1] < max_new_tokens:  # every row stopped at EOS early
            fill = torch.full((b, max_new_tokens - new.shape[1]), self.vocab.eos_id, dtype=new.dtype, device=dev)
            new = torch.cat([new, fill], 1)
        return new


def build_tiny_paligemma(out_dir: str | Path, corpus: Iterable[str] = (), image_size: int = 32,
                         vocab_size: int = 400, seed: int = 0) -> Path:
    """Write a tiny random PaliGemma (SigLIP 1 layer, Gemma 2 layers, width 32) with a BPE tokenizer
    trained locally on ``corpus`` plus the ASCII alphabet, and its processor, to ``out_dir``.

    Loadable with ``AutoProcessor``/``AutoModelForImageTextToText.from_pretrained(out_dir)``; nothing
    is downloaded. The BPE vocabulary is tiny and corpus-trained, so use ``token_mode="add"`` with it
    (its vocabulary tail is common merges, not rare tokens).
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import (PaliGemmaConfig, PaliGemmaForConditionalGeneration, PaliGemmaProcessor,
                              PreTrainedTokenizerFast, SiglipImageProcessor)

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.normalizer = normalizers.Lowercase()
    bpe.pre_tokenizer = pre_tokenizers.Metaspace()
    bpe.decoder = decoders.Metaspace()
    alphabet = [" ".join(string.ascii_lowercase + string.digits + string.punctuation), "\n"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    bpe.train_from_iterator(list(corpus) + alphabet, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>",
                                  bos_token="<bos>", unk_token="<unk>")
    patch = max(4, image_size // 4)
    image_proc = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_proc.image_seq_length = (image_size // patch) ** 2
    with quiet_transformers():
        processor = PaliGemmaProcessor(image_processor=image_proc, tokenizer=tok)  # adds <image>, <loc>, <seg>
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                num_key_value_heads=1, head_dim=16, vocab_size=len(tok), pad_token_id=tok.pad_token_id,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  image_size=image_size, patch_size=patch)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_index=processor.image_token_id,
                             projection_dim=32, vocab_size=len(tok))
    torch.manual_seed(seed)
    model = PaliGemmaForConditionalGeneration(config)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        model.save_pretrained(out)
        processor.save_pretrained(out)
    return out
