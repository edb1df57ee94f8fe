"""The light install: without the models extra (torch, transformers, diffusers, ...), collection, evaluation
of built-in policies and reports work, and a command that needs a model says to install the extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Runs vlabench's CLI in a fresh interpreter in which every package of the models extra fails to import,
# as it would on a light install.
RUNNER = """
import sys
from vlabench.cli import MODEL_STACK

class NoModels:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MODEL_STACK:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)

sys.meta_path.insert(0, NoModels())
from vlabench.cli import main
code = main(sys.argv[1:])
assert not MODEL_STACK & set(sys.modules), sorted(MODEL_STACK & set(sys.modules))
sys.exit(code)
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_collect_eval_and_report_run_without_the_model_stack(tmp_path):
    demos = _cli("collect", "--suite", "envs/pipeline_smoke_train.toml", "--episodes", "2", "--out", str(tmp_path / "d"))
    assert demos.returncode == 0, demos.stderr[-2000:]
    ev = _cli("eval", "--suite", "envs/smoke.toml", "--policy", "random", "--max-episodes", "4", "--out",
              str(tmp_path / "e"))
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert (tmp_path / "e" / "results.json").is_file()
    rep = _cli("report", str(tmp_path / "e"), "--out", str(tmp_path / "r" / "REPORT.md"))
    assert rep.returncode == 0, rep.stderr[-2000:]


def test_a_command_that_needs_a_model_says_to_install_the_extra(tmp_path):
    res = _cli("train", "--recipe", "policies/rt1_small.toml", "--data", str(tmp_path), "--out", str(tmp_path / "r"))
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == ("vlabench train: error: this needs the model stack (torch is not "
                                                   "installed): pip install 'vlabench[models]'")


def test_your_own_class_is_served_and_evaluated_without_the_model_stack(tmp_path):
    import os
    import socket
    import time

    (tmp_path / "light_policy.py").write_text(
        "import numpy as np\n\n"
        "class Forward:\n"
        "    def reset(self, n_envs):\n        pass\n\n"
        "    def act(self, obs):\n"
        "        a = np.zeros((len(obs['slot']), 7), np.float32)\n"
        "        a[:, 0] = 0.5\n        return a\n")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    server = subprocess.Popen([sys.executable, "-c", RUNNER, "serve", "light_policy:Forward", "--port", str(port)],
                              cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(300):
            if server.poll() is not None:
                raise AssertionError(server.stderr.read()[-2000:])
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.2)
        ev = _cli("eval", "--suite", "envs/smoke.toml", "--policy", f"ws://127.0.0.1:{port}", "--max-episodes", "2",
                  "--out", str(tmp_path / "e"))
        assert ev.returncode == 0, ev.stderr[-2000:]
    finally:
        server.kill()
    import json

    res = json.loads((tmp_path / "e" / "results.json").read_text())
    assert res["overall"]["n"] == 2 and res["overall"]["errors"] == 0
    assert res["policy"]["kind"] == "served" and res["policy"]["server"]["protocol"] == "openpi"
