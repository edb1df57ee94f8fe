"""Periodic rollouts during training: policy options reach `vlabench eval`, and the best checkpoint is kept."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

from vlabench.train import hooks
from vlabench.train.config import TrainConfig


def test_rollout_runs_the_checkpoint_on_the_selection_suite(tmp_path, monkeypatch):
    seen = {}

    def fake_run(cmd, **kw):
        seen["cmd"] = cmd
        out = Path(cmd[cmd.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"overall": {"rate": 0.25, "n": 8}}))
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(hooks.subprocess, "run", fake_run)
    cfg = TrainConfig(eval_every=5, eval_suite="envs/lite_select.toml", eval_episodes=8,
                      inference=["decode=mean", "ensemble_decay=0.1"])
    res = hooks.periodic_eval(tmp_path / "latest", cfg, 5, torch.device("cpu"))
    assert res == {"eval_success_rate": 0.25, "eval_episodes": 8.0}
    cmd = seen["cmd"]
    assert cmd[cmd.index("--suite") + 1] == "envs/lite_select.toml" and cmd[cmd.index("--max-episodes") + 1] == "8"
    assert cmd[cmd.index("--policy") + 1] == str(tmp_path / "latest")
    assert "--policy-option" not in cmd  # the checkpoint carries its inference settings itself


def test_keep_best_keeps_the_highest_rate_and_the_later_of_ties(tmp_path):
    cfg = TrainConfig(eval_every=1, eval_suite="envs/lite_select.toml", inference=["decode=mean"])
    latest = tmp_path / "latest"
    latest.mkdir()
    kept = []
    for step, rate in [(1, 0.2), (2, 0.1), (3, 0.2), (4, 0.05)]:
        (latest / "step.txt").write_text(str(step))
        kept.append(hooks.keep_best(tmp_path, latest, {"eval_success_rate": rate, "eval_episodes": 8.0}, cfg, step))
    assert kept == [True, False, True, False]
    assert (tmp_path / "best" / "step.txt").read_text() == "3"
    record = json.loads((tmp_path / "best.json").read_text())
    assert record == {"step": 3, "eval_success_rate": 0.2, "eval_episodes": 8.0,
                      "eval_suite": "envs/lite_select.toml", "inference": ["decode=mean"]}
