"""vlabench suites as a vla-eval StepBenchmark: the same scenes and outcomes as ``vlabench eval``, and vla-eval's
own runner (``vla-eval run --no-docker``) driving them against a vla-eval model server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("vla_eval")

from eval_suites import write_suite  # noqa: E402

from vlabench.eval.harness import EvalConfig, run  # noqa: E402
from vlabench.eval.results import read_episodes  # noqa: E402
from vlabench.eval.vla_eval_benchmark import VlabenchBenchmark  # noqa: E402

SERVER = Path(__file__).resolve().parents[1] / "agents" / "vla_eval_server.py"


def _expert_episode(bench: VlabenchBenchmark, name: str, index: int) -> tuple[dict, dict]:
    task = {**next(t for t in bench.get_tasks() if t["name"] == name), "episode_idx": index}
    raw = bench.reset(task)
    first_obs = bench.make_obs(raw, task)
    step = None
    while step is None or not bench.check_done(step):
        step = bench.step({"actions": bench.slot.env.expert_action()})
    return first_obs, bench.get_step_result(step)


def test_expert_through_the_adapter_matches_vlabench_eval(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=2, max_steps=60)
    bench = VlabenchBenchmark(str(suite))
    assert [t["name"] for t in bench.get_tasks()] == ["pick/seen", "push/seen"]
    assert bench.get_metadata()["max_episodes_per_task"] == 2
    res = run(EvalConfig(suite=suite, policy="expert", workers=1, out=tmp_path / "ref"))
    ref = {(r["task"], r["index"]): r for r in read_episodes(tmp_path / "ref" / "episodes.jsonl")}
    assert res["overall"]["successes"] >= 2  # the comparison is not between two lists of failures
    for (task, index), r in ref.items():
        obs, result = _expert_episode(bench, f"{task}/seen", index)
        assert obs["task_description"] == r["instruction"] and result["seed"] == r["seed"]
        assert set(obs["images"]) == {"image", "wrist_image"} and obs["images"]["image"].shape == (64, 64, 3)
        assert obs["state"].shape == (8,)
        assert (result["success"], result["steps"]) == (r["success"], r["steps"]), (task, index)
    bench.cleanup()


def test_bad_parameters_and_actions_fail_with_what_to_change(tmp_path):
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=1)
    with pytest.raises(FileNotFoundError, match="suite file not found"):
        VlabenchBenchmark(str(tmp_path / "missing.toml"))
    with pytest.raises(ValueError, match=r"cells \['stack/seen'\] are not in .*its cells: pick/seen"):
        VlabenchBenchmark(str(suite), cells=["stack/seen"])
    bench = VlabenchBenchmark(str(suite))
    with pytest.raises(ValueError, match="has 1 episodes .* episodes_per_task <= 1"):
        bench.reset({"name": "pick/seen", "episode_idx": 1})
    bench.reset({"name": "pick/seen", "episode_idx": 0})
    with pytest.raises(ValueError, match=r"one 7-D delta action per step, got .*\(4, 7\)"):
        bench.step({"actions": np.zeros((4, 7))})
    bench.cleanup()


def test_vla_eval_runner_drives_a_suite_against_a_vla_eval_model_server(tmp_path):
    import socket
    import time

    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "place": ["seen"]}, per_cell=2, max_steps=8)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "server.log"
    server = subprocess.Popen([sys.executable, str(SERVER), str(port), str(log)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        config = tmp_path / "cfg.yaml"
        config.write_text(f"""server:
  url: ws://127.0.0.1:{port}
output_dir: {tmp_path / "out"}
benchmarks:
  - benchmark: "vlabench.eval.vla_eval_benchmark:VlabenchBenchmark"
    episodes_per_task: 2
    params:
      suite: {suite}
      cells: ["place/seen", "pick/seen"]
""")
        proc = subprocess.run([sys.executable, "-m", "vla_eval.cli.main", "run", "--no-docker", "--render", "cpu",
                               "--config", str(config)], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
    finally:
        server.kill()
    agg = json.loads((tmp_path / "out" / "VlabenchBenchmark_aggregate.json").read_text())
    by_task = {t["task"]: t["episodes"] for t in agg["tasks"]}
    assert sorted(by_task) == ["pick/seen", "place/seen"]
    for name, eps in by_task.items():
        assert [e["episode_idx"] for e in eps] == [0, 1]
        assert all(e["metrics"]["steps"] == 8 and e["metrics"]["success"] is False for e in eps)
    starts = [json.loads(x) for x in log.read_text().splitlines() if '"start"' in x]
    assert [(e["task"]["name"], e["task"]["episode_idx"]) for e in starts] == [
        ("place/seen", 0), ("place/seen", 1), ("pick/seen", 0), ("pick/seen", 1)]
