"""Two-process DDP (gloo, CPU): finishes, writes one checkpoint, and the ranks stay in sync.

The two ranks are forked from the test process with the environment torchrun would give them
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT): forking skips two fresh `import torch`s, which
matters on a small shared machine. tests/train/train_script.py runs the same thing under a real
`python -m torch.distributed.run --nproc_per_node 2`.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import socket
import traceback
from pathlib import Path

import torch
from safetensors.torch import load_file

from vlabench.train.logger import read_metrics


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, port: int, recipe: Path, data: Path, out: Path, errors) -> None:
    try:
        os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
        from safetensors.torch import save_file

        from vlabench.train import loop

        from vlabench.train.command import parse_train_args

        args = parse_train_args(["--recipe", str(recipe), "--data", str(data), "--out", str(out)])
        model_cfg, train_cfg = args.model, args.train
        trainer = loop.Trainer("tiny", model_cfg, train_cfg, data, out)
        try:
            trainer.fit()
            state = {k: v.detach().clone().contiguous() for k, v in trainer.model.state_dict().items()}
            save_file(state, str(out / f"rank{rank}.safetensors"))
            (out / f"rank{rank}.samples").write_text(
                " ".join(str(i) for b in trainer.sampler.epoch_batches(0) for i, _ in b))
        finally:
            trainer.close()
    except BaseException:
        errors.put(f"rank {rank}: {traceback.format_exc()}")
        raise


def test_two_process_gloo(tiny, demo_dir, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[model]\nname = "tiny"\n[train]\nsteps = 6\nbatch_size = 4\nlr = 1e-2\nwarmup_steps = 1\n'
                      'num_workers = 0\nval_fraction = 0.25\nval_every = 3\nlog_every = 1\nsave_every = 100\n'
                      'device = "cpu"\nema_decay = 0.9\n')
    out = tmp_path / "ddp"
    ctx = mp.get_context("fork")
    errors = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, port, recipe, demo_dir, out, errors)) for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert all(p.exitcode == 0 for p in procs), errors.get() if not errors.empty() else [p.exitcode for p in procs]

    # only rank 0 wrote: one checkpoint, one metrics file
    assert sorted(p.name for p in out.iterdir()) == ["latest", "metrics.csv", "rank0.safetensors", "rank0.samples",
                                                      "rank1.safetensors", "rank1.samples"]
    state = json.loads((out / "latest" / "trainer_state.json").read_text())
    assert state["step"] == 6 and state["world_size"] == 2 and len(state["rng"]) == 2
    rows = read_metrics(out / "metrics.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows[-1]["val_loss"] is not None

    # the ranks trained on disjoint shards, yet their weights are identical: gradients were averaged
    s0 = set((out / "rank0.samples").read_text().split())
    s1 = set((out / "rank1.samples").read_text().split())
    assert s0 and s1 and not s0 & s1
    w0, w1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    ckpt_w = load_file(str(out / "latest" / "model.safetensors"))
    assert w0.keys() == w1.keys() == ckpt_w.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], ckpt_w[k]), k
    init = tiny.TinyModel(tiny.TinyConfig(), json.loads((demo_dir / "stats.json").read_text()))
    assert not torch.equal(init.out.weight, w0["out.weight"])  # it did train
