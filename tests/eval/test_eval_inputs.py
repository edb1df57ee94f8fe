"""What `vlabench eval` does with careless input and interruptions: train suites, renderer choice, a run
whose every episode errors, a busy output folder, Ctrl-C, the default --out, resumed limits, and
checkpoints trained on other observations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from vlabench.eval.harness import EvalConfig, run
from vlabench.eval.runtime import observation_mismatch
from vlabench.eval.workers import FAULT_ENV
from vlabench.fileio import FolderBusyError, exclusive_folder

from test_harness import REPO, SEED0, read_jsonl, write_suite  # noqa: E402 (tests/eval is on sys.path)


def test_train_suite_is_refused_unless_asked_for_and_then_recorded(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, max_steps=3)
    suite.write_text(suite.read_text().replace('kind = "eval"', 'kind = "train"').replace(str(SEED0), "5000")
                     .replace(str(SEED0 + 100), "5100"))
    with pytest.raises(ValueError, match="train suite.*--allow-train-suite"):
        run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "a"))
    assert not (tmp_path / "a").exists()
    res = run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "b", allow_train_suite=True))
    assert res["train_suite_allowed"] is True and res["suite"]["kind"] == "train"


def test_renderer_comes_from_the_flag_then_the_suite_then_the_default(tmp_path):
    plain = write_suite(tmp_path / "plain.toml", {"pick": ["seen"]}, max_steps=2)
    tiny = tmp_path / "tiny.toml"
    tiny.write_text(plain.read_text().replace("[env]\n", '[env]\nrenderer = "tiny"\n'))
    assert run(EvalConfig(suite=plain, policy="noop", out=tmp_path / "d"))["renderer_from"] == "default"
    res = run(EvalConfig(suite=tiny, policy="noop", out=tmp_path / "s"))
    assert (res["renderer_from"], res["env_kwargs"]["renderer"]) == ("suite", "tiny")
    res = run(EvalConfig(suite=tiny, policy="noop", out=tmp_path / "f", renderer="tiny"))
    assert res["renderer_from"] == "flag"


def test_a_run_whose_every_episode_errors_fails(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, max_steps=4)
    monkeypatch.setenv(FAULT_ENV, f"raise:{SEED0}")
    with pytest.raises(RuntimeError, match=r"every episode of this run \(1\) errored.*injected fault"):
        run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "out"))
    res = json.loads((tmp_path / "out" / "results.json").read_text())  # still written, for inspection
    assert res["overall"] == {**res["overall"], "n": 1, "errors": 1}


def test_a_busy_output_folder_is_refused_naming_its_owner(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, max_steps=2)
    with exclusive_folder(tmp_path / "out", "another eval"):
        with pytest.raises(FolderBusyError, match=rf"in use by `another eval` \(PID {os.getpid()}\)"):
            run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "out"))
    assert not (tmp_path / "out" / "results.json").exists()


@pytest.mark.timeout(300)
def test_ctrl_c_says_what_is_recorded_and_how_to_resume(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=4, max_steps=20)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "vlabench.cli", "eval", "--suite", str(suite), "--policy", "random",
                             "--out", str(out)], cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "episodes.jsonl").is_file() and read_jsonl(out / "episodes.jsonl"):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "episodes are recorded in" in last and "rerun the same command" in last
    assert "Traceback" not in err
    n = len(read_jsonl(out / "episodes.jsonl"))
    res = run(EvalConfig(suite=suite, policy="random", out=out))  # the rerun finishes the rest
    assert res["complete"] and res["overall"]["n"] == 8 and n >= 1


def test_default_out_is_named_after_suite_and_policy(tmp_path, monkeypatch):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, max_steps=2, name="tiny-suite")
    monkeypatch.chdir(tmp_path)
    run(EvalConfig(suite=suite, policy="noop"))
    assert (tmp_path / "runs" / "eval" / "tiny-suite-noop" / "results.json").is_file()


def test_a_resume_with_a_smaller_limit_keeps_the_larger_one(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=3, max_steps=2)
    run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "out", max_episodes=2))
    res = run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "out", max_episodes=1))
    assert res["suite"]["max_episodes"] == 2 and res["overall"]["n"] == 2
    res = run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "out"))
    assert res["suite"]["max_episodes"] is None and res["complete"]


def test_observation_mismatch_names_each_option(tmp_path):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in ("config.json", "model.safetensors"):
        (ckpt / name).write_text("{}")
    (ckpt / "dataset.json").write_text(json.dumps({"env_kwargs": {"image_size": 96, "front_fov": 35.0}}))
    diffs = observation_mismatch(str(ckpt), {"image_size": 128, "wrist_size": 84})
    assert diffs[0] == "image_size: trained on 96, evaluated at 128" and diffs[1].startswith("front_fov: trained on 35.0")
    assert observation_mismatch(str(ckpt), {"image_size": 96, "front_fov": 35.0}) == []
    # A privileged-state policy turns privileged_state on; its demos recorded the stream without it.
    assert observation_mismatch(str(ckpt), {"image_size": 96, "front_fov": 35.0, "privileged_state": True}) == []
    (ckpt / "dataset.json").write_text("{}")  # an older checkpoint that did not record them
    assert observation_mismatch(str(ckpt), {"image_size": 128}) == []


def test_episodes_run_interleaved_across_cells_and_a_time_budget_leaves_a_resumable_run(tmp_path, capsys):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=2, max_steps=2)
    res = run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "a", max_minutes=1e-6))
    assert res["overall"]["n"] == 0 and not res["complete"]
    assert "stopped starting episodes after --max-minutes" in capsys.readouterr().out
    run(EvalConfig(suite=suite, policy="noop", out=tmp_path / "a"))  # the rerun continues
    order = [(r["task"], r["index"]) for r in read_jsonl(tmp_path / "a" / "episodes.jsonl")]
    assert order == [("pick", 0), ("push", 0), ("pick", 1), ("push", 1)]


def test_repeated_policy_option_flags_add_up(tmp_path):
    from vlabench.cli import REPEATABLE, main, merge_repeated

    assert merge_repeated(["--policy-option", "a=1", "--workers", "2", "--policy-option", "b=2", "c=-3"],
                          REPEATABLE) == ["--policy-option", "a=1", "b=2", "c=-3", "--workers", "2"]
    (tmp_path / "opts_policy.py").write_text(
        "import numpy as np\n\nclass P:\n    def __init__(self, a: float = 0.0, b: float = 0.0):\n"
        "        self.a, self.b = a, b\n\n    def reset(self, n):\n        pass\n\n"
        "    def act(self, obs):\n        return np.zeros((len(obs['slot']), 7), np.float32)\n")
    import sys

    sys.path.insert(0, str(tmp_path))
    try:
        code = main(["eval", "--suite", "envs/smoke.toml", "--policy", "opts_policy:P", "--policy-option", "a=1",
                     "--max-episodes", "1", "--policy-option", "b=2", "--out", str(tmp_path / "e")])
    finally:
        sys.path.remove(str(tmp_path))
    assert code == 0
    assert json.loads((tmp_path / "e" / "results.json").read_text())["policy"]["options"] == {"a": "1", "b": "2"}
