"""Served policies against the real third-party code: openpi-client -> `vlabench serve`, vlabench's client ->
a vla-eval ModelServer started by vla-eval's own serving code, and vlabench's client -> `vlabench serve` with
the same per-episode actions as in-process evaluation. Failures: refused action specs, dead and hung servers."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from vlabench.agents.served import ServedPolicy, ServerError
from vlabench.agents.spec import PolicySpec
from vlabench.contracts import UserError
from vlabench.eval.harness import EvalConfig, run
from vlabench.eval.serve import PolicyServer

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "eval"))
from eval_suites import write_suite  # noqa: E402


def _obs(n: int = 1, first: bool = True, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "state": rng.standard_normal((n, 8)).astype(np.float32), "instruction": ["pick up the red block"] * n,
            "slot": np.arange(n), "is_first": np.array([first] * n), "rng_seed": np.arange(n) + 7}


class Scripted:
    """A deterministic policy whose action depends on the observation and on the slot's step count."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s, self.steps = delay_s, {}

    def reset(self, n_envs: int) -> None:
        self.steps = {}

    def act(self, obs_batch: dict) -> np.ndarray:
        time.sleep(self.delay_s)
        out = np.zeros((len(obs_batch["image"]), 7), np.float32)
        for i, (slot, first) in enumerate(zip(obs_batch["slot"], obs_batch["is_first"])):
            self.steps[int(slot)] = 0 if first else self.steps.get(int(slot), 0) + 1
            out[i, 0] = obs_batch["image"][i].mean() / 255.0
            out[i, 1] = self.steps[int(slot)] / 100.0
        return out


@pytest.fixture
def served():
    servers = []

    def start(policy, **kw) -> str:
        server = PolicyServer(PolicySpec.of(policy), host="127.0.0.1", port=0, **kw)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"ws://127.0.0.1:{server.port}"

    yield start
    for s in servers:
        s.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openpi_client_queries_vlabench_serve(served):
    wcp = pytest.importorskip("openpi_client.websocket_client_policy")
    url = served(Scripted())
    client = wcp.WebsocketClientPolicy(host=url)
    meta = client.get_server_metadata()
    assert meta["server"] == "vlabench" and meta["action_dim"] == 7 and meta["policy"]["kind"] == "instance"
    obs = _obs()
    reply = client.infer({"observation/image": obs["image"][0], "observation/state": obs["state"][0],
                          "prompt": "pick up the red block"})
    assert reply["actions"].shape == (1, 7)
    assert reply["actions"][0, 0] == pytest.approx(obs["image"][0].mean() / 255.0, abs=1e-6)
    second = client.infer({"observation/image": obs["image"][0], "prompt": "pick up the red block"})
    assert second["actions"][0, 1] == pytest.approx(0.01)  # the slot's second step: the server kept its memory
    with pytest.raises(RuntimeError, match="observation lacks"):
        client.infer({"prompt": "no image"})


def test_served_episodes_match_in_process(tmp_path, served):
    from test_stochastic_layouts import ActionLog, diffusion_checkpoint, logged

    ckpt = diffusion_checkpoint(tmp_path / "ckpt")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=2, max_steps=12)
    logs = {}
    for name in ("local", "served"):
        logs[name] = tmp_path / f"{name}-actions"
        logs[name].mkdir()
        policy = ActionLog(PolicySpec.parse(str(ckpt)).build("cpu"), logs[name])
        if name == "local":
            res = run(EvalConfig(suite=suite, out=tmp_path / name, workers=1, envs_per_worker=2), policy=policy)
        else:
            url = served(policy)
            res = run(EvalConfig(suite=suite, out=tmp_path / name, workers=1, envs_per_worker=2, policy=url,
                                 policy_option=["protocol=openpi", "timeout_s=60"]))
            assert res["policy"]["kind"] == "served" and res["policy"]["server"]["protocol"] == "openpi"
            assert res["policy"]["server"]["metadata"]["server"] == "vlabench"
        assert res["overall"]["n"] == 4 and res["overall"]["errors"] == 0
    a, b = logged(logs["local"]), logged(logs["served"])
    assert len(a) == 4 and a.keys() == b.keys()
    assert all(np.allclose(a[k], b[k], atol=1e-4, rtol=0) for k in a)
    eps = [[json.loads(x) for x in (tmp_path / n / "episodes.jsonl").read_text().splitlines()] for n in logs]
    assert sorted((e["task"], e["index"], e["steps"], e["success"]) for e in eps[0]) == \
        sorted((e["task"], e["index"], e["steps"], e["success"]) for e in eps[1])


def _vla_eval_server(tmp_path: Path, *extra: str):
    pytest.importorskip("vla_eval")
    port, log = _free_port(), tmp_path / "server.log"
    proc = subprocess.Popen([sys.executable, str(HERE / "vla_eval_server.py"), str(port), str(log), *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, f"ws://127.0.0.1:{port}", log
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode())
            time.sleep(0.2)
    proc.kill()
    raise TimeoutError("the vla-eval server did not start")


def test_vlabench_client_runs_episodes_on_a_vla_eval_model_server(tmp_path):
    proc, url, log = _vla_eval_server(tmp_path)
    try:
        policy = ServedPolicy(url)  # protocol auto: the server waits for hello, so it is vla-eval
        obs = _obs(n=2)
        a = policy.act(obs)
        assert policy.protocol == "vla-eval" and "action_spec" in policy.server_metadata
        np.testing.assert_allclose(a[:, 0], obs["image"].reshape(2, -1).mean(1) / 255.0, atol=1e-6)
        np.testing.assert_allclose(a[:, 1], np.clip(obs["state"][:, -1], -1, 1), atol=1e-6)
        assert list(a[:, 6]) == [-1.0, -1.0]
        b = policy.act(_obs(n=2, first=False))
        assert list(b[:, 6]) == [1.0, 1.0]  # the server's per-session step counter advanced
        policy.act(_obs(n=1, first=True))  # slot 0 starts a new episode
        policy.close()
        suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=2, max_steps=6)
        res = run(EvalConfig(suite=suite, out=tmp_path / "run", workers=1, envs_per_worker=2, policy=url))
        assert res["overall"]["n"] == 2 and res["overall"]["errors"] == 0
        assert res["policy"]["server"]["protocol"] == "vla-eval"
        time.sleep(0.5)
        events = [json.loads(x) for x in log.read_text().splitlines()]
        starts = [e for e in events if e["event"] == "start"]
        assert len(starts) == 3 + 2 and starts[-1]["task"]["instruction"].startswith(("pick", "grab", "lift"))
    finally:
        proc.kill()


def test_a_server_without_a_delta_action_is_refused(tmp_path):
    proc, url, _ = _vla_eval_server(tmp_path, "absolute")
    try:
        with pytest.raises(UserError, match="produces position: 3-D absolute_xyz.*7-D delta action"):
            ServedPolicy(url, protocol="vla-eval").act(_obs())
    finally:
        proc.kill()


def test_dead_and_hung_servers_raise_and_reconnect(served):
    dead = ServedPolicy(f"ws://127.0.0.1:{_free_port()}", timeout_s=2)
    with pytest.raises(ServerError, match="cannot connect"):
        dead.act(_obs())
    slow = Scripted(delay_s=1.5)
    url = served(slow)
    hung = ServedPolicy(url, protocol="openpi", timeout_s=0.5)
    with pytest.raises(ServerError, match=r"sent nothing for 0.5 s"):
        hung.act(_obs())
    slow.delay_s = 0.0
    time.sleep(1.5)  # the server finishes the late reply on the dropped connection
    assert hung.act(_obs()).shape == (1, 7)  # reconnected
    with pytest.raises(UserError, match="unknown protocol"):
        ServedPolicy(url, protocol="grpc")


class FailsOnce(Scripted):
    """Raises on its 5th to 7th calls, as a server's model might (the server answers with its traceback and
    closes the connection). The harness retries a failed batch row by row, so a single failure is absorbed;
    three in a row fail both rows of the batch and their retries."""

    calls = 0

    def act(self, obs_batch):
        FailsOnce.calls += 1
        if 5 <= FailsOnce.calls <= 7:
            raise RuntimeError("CUDA out of memory (simulated)")
        return super().act(obs_batch)


def test_a_failing_server_makes_errors_of_its_episodes_and_the_run_goes_on(tmp_path, served):
    url = served(FailsOnce())
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=4, max_steps=5)
    res = run(EvalConfig(suite=suite, out=tmp_path / "run", workers=1, envs_per_worker=2, policy=url))
    eps = [json.loads(x) for x in (tmp_path / "run" / "episodes.jsonl").read_text().splitlines()]
    errors = [e for e in eps if e["status"] == "error"]
    assert res["overall"]["n"] == 4 and len(eps) == 4 and 1 <= len(errors) < 4
    assert all("CUDA out of memory (simulated)" in e["error"] for e in errors)


def test_serve_refuses_policies_that_read_privileged_inputs():
    with pytest.raises(UserError, match="cannot be served"):
        PolicyServer(PolicySpec.parse("expert"), host="127.0.0.1", port=0)
