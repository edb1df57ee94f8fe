"""Has an RT-2 checkpoint learned to read its inputs, or only the demos' marginal action distribution?

A token model that ignores image and instruction can still reach a low loss: the best constant
prediction scores the marginal entropy of the demos' action bins, and always emitting the most common
bin of each dimension scores the mode's token accuracy. This script prints those two input-free
baselines (from every frame of --data) next to the checkpoint's own numbers on --frames frames spread
over the demos: teacher-forced loss and token accuracy (7 action tokens + EOS, as in training), the same
loss with the images and with the instructions shuffled across the frames (a model that reads them
loses more), and how many distinct actions greedy decoding emits. A model at the baselines, insensitive
to the shuffles and emitting one action for every frame has collapsed to the marginal. Last, how much
the encoder's output moves when the images are shuffled, in the checkpoint and in a fresh model of the
same config (packaged pretrained vision weights, the rest initialised with torch seed 0): whether the
image pathway was open before training.

    python benchmarks/rt2_collapse.py --policy RUN/train/rt2_cotrain --data RUN/data/train [--frames 96]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def marginal_baseline(demo_bins: np.ndarray, scored_bins: np.ndarray) -> dict:
    """The best input-free model of demo_bins ``(N, 7)`` (each dimension's marginal distribution, and its
    mode for greedy decoding) scored on scored_bins ``(M, 7)``, per answer position (7 actions + EOS,
    which costs nothing): loss, token accuracy, and the mode's accuracy per dimension."""
    n_pos = demo_bins.shape[1] + 1
    nll, mode_acc = [], []
    for d in range(demo_bins.shape[1]):
        p = np.bincount(demo_bins[:, d], minlength=256) / len(demo_bins)
        nll.append(float(-np.log(np.maximum(p[scored_bins[:, d]], 1e-12)).mean()))
        mode_acc.append(float((scored_bins[:, d] == p.argmax()).mean()))
    return {"mode_acc": mode_acc, "loss": sum(nll) / n_pos, "acc": (sum(mode_acc) + 1) / n_pos}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="an RT-2 checkpoint or run directory")
    ap.add_argument("--data", required=True, help="the demo folder it was trained on (vlabench collect --out)")
    ap.add_argument("--frames", type=int, default=96, help="frames the checkpoint is scored on (>= 2)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.frames < 2:
        ap.error("--frames must be at least 2 (the shuffles need two)")
    import torch

    from vlabench.data.layout import read_lowdim_by_shard
    from vlabench.data.manifest import load_manifest, manifest_episodes
    from vlabench.data.shards import read_episode
    from vlabench.models.rt2 import RT2Policy
    from vlabench.models.rt2.model import action_prompt, to_chw_uint8
    from vlabench.agents.spec import PolicySpec

    torch.set_num_threads(1)
    try:
        episodes = manifest_episodes(load_manifest(args.data))
    except (OSError, ValueError) as e:
        ap.error(f"--data {args.data}: {e}")
    if not episodes:
        ap.error(f"--data {args.data} holds no demos (write some with `vlabench collect --out {args.data}`)")
    try:
        policy = PolicySpec.parse(args.policy).build("cpu")
    except (OSError, ValueError) as e:
        ap.error(str(e))
    if not isinstance(policy, RT2Policy):
        ap.error(f"{args.policy} is not an RT-2 checkpoint ({type(policy).__name__})")
    model = policy.model
    tokenize = model.action_tokenizer.encode
    all_actions = [a for _, _, a in read_lowdim_by_shard(Path(args.data), episodes, False, [])]
    demo_bins = tokenize(torch.from_numpy(np.concatenate(all_actions)).float()).numpy()

    rng = np.random.default_rng(args.seed)
    picks = rng.choice(len(episodes), size=min(args.frames, len(episodes)), replace=False)
    images, actions, instructions = [], [], []
    for i in range(args.frames):
        e = episodes[picks[i % len(picks)]]
        rec = read_episode(Path(args.data) / e["file"], e["demo"])
        t = int(rng.integers(len(rec["actions"])))
        images.append(rec["obs"]["image"][t]), actions.append(rec["actions"][t])
        instructions.append(str(rec["attrs"]["instruction"]))
    images = to_chw_uint8(np.stack(images))
    bins = tokenize(torch.from_numpy(np.stack(actions)).float())
    targets = model.vocab.action_target(bins)
    base = marginal_baseline(demo_bins, bins.numpy())
    roll = np.roll(np.arange(args.frames), 1)

    def loss(imgs, instr) -> tuple[float, float]:
        with torch.inference_mode():
            value, acc = model.backbone.loss(imgs, [action_prompt(s) for s in instr], targets,
                                             parallel=model.cfg.parallel_decode)
        return float(value), float(acc)

    own, own_acc = loss(images, instructions)
    shuffled_images, _ = loss(images[roll], instructions)
    shuffled_text, _ = loss(images, [instructions[i] for i in roll])
    def image_effect(m) -> str:
        """How far the encoder output moves when the images are shuffled (mean |change| / mean |value|),
        and the projected image tokens' norm next to their spread across frames."""
        prompts = [action_prompt(s) for s in instructions]
        with torch.inference_mode():
            memory, _ = m.backbone.encode(images, prompts)
            moved, _ = m.backbone.encode(images[roll], prompts)
            tokens = m.backbone.projector(m.backbone.vision(images))
        return (f"{float((memory - moved).abs().mean() / memory.abs().mean()):.2g} (image tokens: norm "
                f"{float(tokens.norm(dim=-1).mean()):.3g}, std across frames {float(tokens.std(0).mean()):.2g})")

    torch.manual_seed(0)
    fresh = type(model)(dataclasses.replace(model.cfg, vision_pretrained=True), model.stats).eval()
    greedy = model.predict_bins(images, instructions)
    distinct = len({tuple(row) for row in greedy.tolist()})

    print(f"policy {args.policy}; demos {args.data} ({len(demo_bins)} frames); {args.frames} frames scored "
          f"(seed {args.seed})\n")
    print("| on the scored frames | loss (nats per answer token) | token accuracy |\n|---|---:|---:|")
    print(f"| input-free baseline: the demos' marginal, its mode for accuracy | {base['loss']:.3f} | {base['acc']:.3f} |")
    print(f"| checkpoint, own image and instruction | {own:.3f} | {own_acc:.3f} |")
    print(f"| checkpoint, images shuffled across frames | {shuffled_images:.3f} | |")
    print(f"| checkpoint, instructions shuffled across frames | {shuffled_text:.3f} | |")
    print(f"\ngreedy decoding: {distinct} distinct actions over {args.frames} frames; exact-bin accuracy per dimension "
          f"{[round(float(a), 2) for a in (greedy == bins).float().mean(0)]} "
          f"(the mode's: {[round(a, 2) for a in base['mode_acc']]})")
    print(f"\nencoder output change when the images are shuffled (relative): checkpoint {image_effect(model)}; "
          f"fresh model {image_effect(fresh)}")


if __name__ == "__main__":
    main()
