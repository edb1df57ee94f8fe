"""collect: exact counts after kill -9 and resume, no repeated seeds, every shard opens; replay matches."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from vlabench.data.collect import CollectConfig, run
from vlabench.data.manifest import load_manifest, manifest_episodes
from vlabench.data.replay import ReplayConfig, replay
from vlabench.tasks import TASKS

def _keys(root):
    return [(e["task"], e["split"], e["index"], e["seed"]) for e in manifest_episodes(load_manifest(root))]


def test_kill_and_resume_gives_exact_count(tmp_path, train_suite):
    suite, out = train_suite(["pick", "push"]), tmp_path / "demos"
    cmd = [sys.executable, "-m", "vlabench.cli", "collect", "--suite", str(suite), "--episodes", "10",
           "--workers", "2", "--out", str(out), "--episodes-per-shard", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline:  # kill once a few episodes are durable, mid-run
        pending = list((out / "pending").glob("*.h5")) if (out / "pending").exists() else []
        if len(pending) + len(list(out.glob("shard_*.h5"))) * 2 >= 3:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = _keys(out)
    assert 0 < len(partial) < 10
    summary = run(CollectConfig(suite=suite, episodes=10, workers=2, out=out, episodes_per_shard=2))
    keys = _keys(out)
    assert summary["episodes"] == 10 and len(keys) == 10
    assert len({k[3] for k in keys if k[0] == "pick"}) == len([k for k in keys if k[0] == "pick"])  # no seed twice
    assert set(partial) <= set(keys)
    for shard in out.glob("shard_*.h5"):
        with h5py.File(shard) as f:
            assert f["data"].attrs["n_episodes"] >= 1
    # Running the finished command again collects nothing new.
    assert run(CollectConfig(suite=suite, episodes=10, workers=1, out=out))["episodes"] == 10
    assert json.loads((out / "collect.json").read_text())["expert_success_rate"] > 0.9


def test_collect_refuses_eval_suites(tmp_path):
    with pytest.raises(ValueError, match="kind 'train'"):
        run(CollectConfig(suite=Path("envs/smoke.toml"), episodes=1, out=tmp_path / "d"))


TRAINABLE = [name for name, task in TASKS.items() if "seen" in task.splits]


def test_replay_reproduces_every_task(tmp_path, train_suite):
    suite, out = train_suite(TRAINABLE), tmp_path / "demos"
    # Two per task, so one unlucky expert failure cannot leave a task out.
    n = run(CollectConfig(suite=suite, episodes=2 * len(TRAINABLE), workers=1, out=out))["episodes"]
    tasks_seen = set()
    for i in range(n):
        video = tmp_path / f"ep{i}.mp4" if i == 0 else None
        result = replay(ReplayConfig(data=out, episode=i, out=video, resolution=48 if i == 0 else 0))
        assert result["ok"], result
        assert result["max_state_error"] <= 1e-4 and result["max_pose_error"] <= 1e-4
        tasks_seen.add(result["task"])
    assert tasks_seen == set(TRAINABLE)
    assert (tmp_path / "ep0.mp4").stat().st_size > 1000
    with pytest.raises(ValueError, match="out of range"):
        replay(ReplayConfig(data=out, episode=99))


def test_dart_demos_label_the_expert_and_replay_what_ran(tmp_path, train_suite):
    suite = train_suite(["pick"])
    clean = run(CollectConfig(suite=suite, episodes=2, workers=1, out=tmp_path / "clean"))
    dart = run(CollectConfig(suite=suite, episodes=2, workers=1, out=tmp_path / "dart", perturb=0.3))
    assert clean["perturb"] == 0 and dart["perturb"] == 0.3 and dart["episodes"] == 2
    from vlabench.data.shards import read_episode

    entry = manifest_episodes(load_manifest(tmp_path / "dart"))[0]
    rec = read_episode(tmp_path / "dart" / entry["file"], entry["demo"])
    labels, ran = rec["actions"], rec["sim"]["executed_actions"]
    assert rec["attrs"]["expert_perturb"] == 0.3 and ran.shape == labels.shape
    opened = labels[:, 6] < 0
    assert np.abs(ran[opened, :2] - labels[opened, :2]).mean() > 0.02  # the env ran perturbed moves...
    np.testing.assert_array_equal(ran[~opened], labels[~opened])  # ...but never while the gripper closes
    np.testing.assert_array_equal(ran[:, 2:], labels[:, 2:])  # ...and never dz, rotation or the gripper
    result = replay(ReplayConfig(data=tmp_path / "dart", episode=0))
    assert result["ok"], result
    with pytest.raises(ValueError, match="collected with perturb=0.3"):
        run(CollectConfig(suite=suite, episodes=3, workers=1, out=tmp_path / "dart"))
    (tmp_path / "dart" / "collect.json").unlink()  # as if interrupted: the stored episodes still say it
    with pytest.raises(ValueError, match=r"collected with perturb=0.3 \(.*\.h5\)"):
        run(CollectConfig(suite=suite, episodes=3, workers=1, out=tmp_path / "dart"))
    with pytest.raises(ValueError, match="collected with noise=0.0"):
        run(CollectConfig(suite=suite, episodes=3, workers=1, out=tmp_path / "dart", perturb=0.3, noise=0.1))
    with pytest.raises(ValueError, match="must be >= 0"):
        run(CollectConfig(suite=suite, episodes=1, out=tmp_path / "neg", perturb=-0.1))
    with pytest.raises(RuntimeError, match="failed all of the first 20 episodes"):
        run(CollectConfig(suite=suite, episodes=1, out=tmp_path / "hopeless", perturb=50.0))

