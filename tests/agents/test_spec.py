"""Tests for vlabench.agents.spec: what --policy strings name, your own class, entry points, provenance."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from vlabench.agents.spec import ENTRY_POINT_GROUP, PolicySpec
from vlabench.contracts import Traits, UserError

ROOT = Path(__file__).resolve().parents[2]
USER_POLICY = '''
import numpy as np

class Forward:
    """A user's policy: constant +x motion, gripper open, speed set by a constructor option."""
    stochastic = False

    def __init__(self, speed: float = 0.5, device: str = "cpu"):
        self.speed, self.device = speed, device

    def reset(self, n_envs):
        pass

    def act(self, obs_batch):
        a = np.zeros((len(obs_batch["slot"]), 7), np.float32)
        a[:, 0], a[:, 6] = self.speed, -1.0
        return a
'''


@pytest.fixture
def user_package(tmp_path, monkeypatch) -> Path:
    """An installed-looking package ``mypol`` (importable, with a dist-info that registers an entry point)."""
    site = tmp_path / "site"
    (site / "mypol").mkdir(parents=True)
    (site / "mypol" / "__init__.py").write_text(USER_POLICY)
    info = site / "mypol-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mypol\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nforward = mypol:Forward\n")
    (info / "top_level.txt").write_text("mypol\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_parse_names_each_kind(tmp_path, user_package) -> None:
    assert PolicySpec.parse("expert").kind == "builtin"
    assert PolicySpec.parse(f"replay:{tmp_path}").kind == "builtin"
    assert PolicySpec.parse(str(tmp_path)).kind == "checkpoint"
    assert PolicySpec.parse("mypol:Forward", ["speed=0.25"]) == PolicySpec("import", "mypol:Forward", (("speed", "0.25"),))
    assert PolicySpec.parse("forward").kind == "entry_point"
    spec = PolicySpec.parse("mypol:Forward", ["speed=0.25"])
    assert pickle.loads(pickle.dumps(spec)) == spec


@pytest.mark.parametrize("text,needle", [("expret", "package.module:ClassName"), ("replay", "replay:DATASET_DIR"),
                                         ("nosuchmod:Cls", "cannot import module 'nosuchmod'"),
                                         ("mypol:Nope", "has no attribute 'Nope'")])
def test_bad_policy_strings_are_one_clear_error(user_package, text, needle) -> None:
    with pytest.raises(UserError, match=needle):
        PolicySpec.parse(text).build("cpu")


def test_options_reach_the_constructor_typed_and_bad_ones_are_named(user_package) -> None:
    policy = PolicySpec.parse("mypol:Forward", ["speed=0.25"]).build("cpu")
    assert policy.speed == 0.25 and policy.device == "cpu"
    with pytest.raises(UserError, match=r"\['sped'\] are not parameters of mypol:Forward; valid: speed"):
        PolicySpec.parse("mypol:Forward", ["sped=1"]).build("cpu")
    with pytest.raises(UserError, match="speed='fast' must be a float"):
        PolicySpec.parse("mypol:Forward", ["speed=fast"]).build("cpu")
    with pytest.raises(UserError, match="KEY=VALUE"):
        PolicySpec.parse("mypol:Forward", ["speed"])
    with pytest.raises(UserError, match="not to the built-in"):
        PolicySpec.parse("noop", ["x=1"])


def test_describe_records_import_string_package_and_version(user_package) -> None:
    d = PolicySpec.parse("forward", ["speed=1"]).describe()
    assert d == {"name": "forward", "kind": "entry_point", "checkpoint": None, "checkpoint_hash": None,
                 "options": {"speed": "1"}, "import": "mypol:Forward", "package": "mypol", "version": "1.2.3"}


def test_traits_come_from_the_class_without_building_it() -> None:
    assert PolicySpec.parse("expert").traits() == Traits(needs_expert=True, obs_keys=())
    assert PolicySpec.parse("random").traits().needs_episode_info
    assert not PolicySpec.parse("noop").traits().needs_episode_info

    class Bad:
        obs_keys = ("lidar",)

        def reset(self, n):
            pass

        def act(self, b):
            pass

    with pytest.raises(ValueError, match="unknown obs_keys \\['lidar'\\]"):
        PolicySpec.of(Bad()).traits()
    with pytest.raises(UserError, match="not a policy"):
        PolicySpec.of(object())


def _cli(args: list[str], cwd: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "vlabench.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.parametrize("policy", ["mypol:Forward", "forward"])
def test_cli_evaluates_your_own_class_and_an_entry_point(tmp_path, user_package, policy) -> None:
    out = tmp_path / "run"
    r = _cli(["eval", "--suite", str(ROOT / "envs/smoke.toml"), "--policy", policy, "--policy-option", "speed=0.3",
              "--max-episodes", "2", "--out", str(out)], tmp_path, user_package)
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["policy"]["import"] == "mypol:Forward" and res["policy"]["options"] == {"speed": "0.3"}
    assert res["overall"]["n"] == 2 and res["overall"]["errors"] == 0
    r = _cli(["eval", "--suite", str(ROOT / "envs/smoke.toml"), "--policy", "mypol:Nope", "--out",
              str(tmp_path / "bad")], tmp_path, user_package)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("vlabench eval: error: policy 'mypol:Nope'")


def test_an_instance_runs_in_process(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "tests" / "eval"))
    from eval_suites import write_suite

    from vlabench.eval.harness import EvalConfig, run

    class Still:
        def reset(self, n):
            self.seen = []

        def act(self, b):
            self.seen.append(sorted(k for k in b if k not in ("image", "wrist_image")))
            return np.zeros((len(b["slot"]), 7), np.float32)

    p = Still()
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=1, max_steps=2)
    res = run(EvalConfig(suite=suite, out=tmp_path / "out"), policy=p)
    assert res["policy"]["kind"] == "instance" and res["overall"]["n"] == 1
    # what a policy that declares nothing sees: the observation, slot, is_first and rng_seed; no metadata
    assert p.seen[0] == ["instruction", "is_first", "rng_seed", "slot", "state"]
