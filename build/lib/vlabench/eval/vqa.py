"""``vlabench vqa-eval``: exact-match VQA accuracy of an RT-2 checkpoint on held-out scenes, against a
majority-answer baseline. The questions and scenes come from vlabench.data.vqa."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlabench.data.vqa import normalize_answer, render_vqa
from vlabench.fileio import write_json_atomic


@dataclass
class VQAEvalConfig:
    """Exact-match VQA accuracy of an RT-2 checkpoint on held-out scenes (`vlabench vqa-eval`)."""

    checkpoint: str
    """RT-2 checkpoint directory."""
    data: str | None = None
    """Held-out .npz from VQAGenConfig; None = render scenes from tasks/seed_start/n_scenes now."""
    tasks: list[str] = field(default_factory=list)
    """Task ids (or ``task:split``) for on-the-fly scenes when data is None (empty = every registered task)."""
    split: str = "seen"
    """Split for on-the-fly scenes of tasks without ``:split``."""
    suite: str | None = None
    """Optional suite file whose [env] options build the env for on-the-fly scenes; overrides image_size."""
    seed_start: int = 950_000
    """First held-out scene seed (disjoint from the generation default 900000..)."""
    n_scenes: int = 50
    """On-the-fly scenes to render."""
    questions_per_scene: int = 8
    """Questions per on-the-fly scene."""
    image_size: int = 128
    """Front-camera size for on-the-fly scenes."""
    renderer: str = "tiny"
    """Renderer for on-the-fly scenes."""
    n: int | None = None
    """Score at most this many questions (None = all)."""
    baseline_data: str | None = None
    """VQA .npz whose most common answer per question kind is scored as a baseline (default: the
    checkpoint's vqa_data, when it exists)."""
    batch_size: int = 32
    """Questions per forward pass."""
    device: str = "cpu"
    """Torch device: cpu, cuda, cuda:N or auto."""
    out: str | None = None
    """Optional JSON file for the results."""


def exact_match(predictions: list[str], answers: list[str], kinds: list[str]) -> dict:
    """Accuracy overall and per kind after :func:`normalize_answer`."""
    per: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for p, a, k in zip(predictions, answers, kinds):
        per[k][0] += int(normalize_answer(p) == normalize_answer(a))
        per[k][1] += 1
    correct, n = sum(c for c, _ in per.values()), sum(t for _, t in per.values())
    return {"accuracy": correct / max(n, 1), "correct": correct, "n": n,
            "per_kind": {k: {"accuracy": c / t, "correct": c, "n": t} for k, (c, t) in sorted(per.items())}}


def majority_answers(kinds: list[str], answers: list[str]) -> dict[str, str]:
    """The most common answer of each question kind (ties: the first seen)."""
    per: dict[str, Counter] = defaultdict(Counter)
    for k, a in zip(kinds, answers):
        per[k][normalize_answer(a)] += 1
    return {k: c.most_common(1)[0][0] for k, c in per.items()}


def run(cfg: VQAEvalConfig) -> dict:
    """Load the checkpoint, answer every held-out question, return (and optionally write) the scores."""
    import torch
    from tqdm import tqdm

    from vlabench.devices import resolve_device
    from vlabench.models.checkpoint import load_model

    if cfg.baseline_data and not Path(cfg.baseline_data).is_file():
        raise FileNotFoundError(f"baseline data {cfg.baseline_data} does not exist (a VQA .npz from vqa-gen)")
    device = resolve_device(cfg.device)
    model, _ = load_model(cfg.checkpoint, device, use_ema=True, expect="rt2")
    if cfg.data:
        with np.load(cfg.data, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    else:
        seeds = list(range(cfg.seed_start, cfg.seed_start + cfg.n_scenes))
        arrays = render_vqa(cfg.tasks, cfg.split, seeds, cfg.questions_per_scene, cfg.suite, cfg.image_size,
                            cfg.renderer)
    train_file = model.cfg.vqa_data
    if train_file and Path(train_file).exists():
        with np.load(train_file, allow_pickle=False) as z:
            overlap = set(z["scene_seed"].tolist()) & set(arrays["scene_seed"].tolist())
        if overlap:
            raise ValueError(f"{len(overlap)} evaluation scene seeds (e.g. {sorted(overlap)[:3]}) were used for "
                             f"VQA training data {train_file}; pick a disjoint seed_start")
    n = len(arrays["question"]) if cfg.n is None else min(cfg.n, len(arrays["question"]))
    images = torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2)
    preds: list[str] = []
    for s in tqdm(range(0, n, cfg.batch_size), desc="vqa-eval"):
        rows = arrays["image_index"][s : s + cfg.batch_size]
        qs = arrays["question"][s : s + cfg.batch_size].tolist()
        preds += model.answer(images[rows].to(device), qs)
    result = exact_match(preds, arrays["answer"][:n].tolist(), arrays["kind"][:n].tolist())
    result["checkpoint"] = str(cfg.checkpoint)
    baseline = cfg.baseline_data or train_file
    if baseline and Path(baseline).exists():
        with np.load(baseline, allow_pickle=False) as z:
            majority = majority_answers(z["kind"].tolist(), z["answer"].tolist())
        kinds = arrays["kind"][:n].tolist()
        result["majority_baseline"] = {"data": str(baseline), **exact_match(
            [majority.get(k, "") for k in kinds], arrays["answer"][:n].tolist(), kinds)}
    result["examples"] = [{"question": q, "answer": a, "prediction": p}
                          for q, a, p in zip(arrays["question"][:10].tolist(), arrays["answer"][:10].tolist(), preds[:10])]
    base = result.get("majority_baseline", {}).get("per_kind", {})
    print(f"VQA exact match {result['correct']}/{result['n']} = {result['accuracy']:.1%}"
          + (f" (majority-answer baseline {result['majority_baseline']['accuracy']:.1%})" if base else ""))
    for kind, row in result["per_kind"].items():
        print(f"  {kind:<11} {row['correct']:>4}/{row['n']:<4} {row['accuracy']:6.1%}"
              + (f"   baseline {base[kind]['accuracy']:6.1%}" if kind in base else ""))
    if cfg.out:
        write_json_atomic(cfg.out, result)
    return result
