"""collect under faults: bad options, a worker that raises, dies or is killed, a killed parent, a second
collect into the same folder, Ctrl-C. Every wait is bounded (subprocess timeouts, polling deadlines)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlabench.data.collect import FAILURES, CollectConfig, run
from vlabench.data.collect_worker import FAULT_ENV
from vlabench.data.manifest import completed_keys
from vlabench.fileio import FolderBusyError

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find worker processes")

SUITE = """name = "faults"
kind = "train"
seed_range = [0, 100]
episodes_per_cell = 1
[env]
image_size = 24
wrist_size = 16
[[cells]]
task = "pick"
splits = ["seen"]
"""


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    path = tmp_path / "train.toml"
    path.write_text(SUITE)
    return path


def _cmd(suite: Path, out: Path, episodes: int, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "vlabench.cli", "collect", "--suite", str(suite), "--episodes", str(episodes),
            "--workers", str(workers), "--out", str(out)]


def _start(cmd: list[str], fault: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _workers_in_group(pgid: int) -> set[int]:
    """Live (non-zombie) multiprocessing-spawned processes in process group `pgid`."""
    found = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (d / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and b"spawn_main" in cmdline:
            found.add(int(d.name))
    return found


def _wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


def _pending(out: Path) -> int:
    return len(list((out / "pending").glob("*.h5"))) if (out / "pending").exists() else 0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


def test_bad_env_option_is_refused_before_anything_starts(tmp_path: Path, suite: Path, capsys) -> None:
    from vlabench.cli import main

    out = tmp_path / "demos"
    with pytest.raises(ValueError, match=r"--image-size 10000: image_size must be an integer in \[16, 512\], got 10000"):
        run(CollectConfig(suite=suite, episodes=1, out=out, image_size=10000))
    assert main(["collect", "--suite", str(suite), "--episodes", "1", "--out", str(out), "--wrist-size", "8"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--wrist-size 8: wrist_size must be an integer in [16, 512]" in err, err
    assert not out.exists()  # nothing was created, no worker started


@pytest.mark.timeout(300)
def test_a_worker_that_raises_stops_the_run_with_one_line(tmp_path: Path, suite: Path) -> None:
    out = tmp_path / "demos"
    proc = _start(_cmd(suite, out, episodes=3), fault="raise:1")
    try:
        _, err = proc.communicate(timeout=240)
    finally:
        _kill_group(proc)
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("vlabench collect:")]
    assert len(lines) == 1, err
    assert ("episode pick/seen #1 (seed 1) raised in worker 0: RuntimeError: injected fault" in lines[0]
            and "episodes are on disk" in lines[0] and "rerun the same command" in lines[0]), lines[0]
    assert (0 in {k[3] for k in completed_keys(out)}) and not (out / FAILURES).exists()  # seed 1 will be retried


@pytest.mark.timeout(300)
def test_a_worker_that_dies_is_restarted_and_the_episode_recorded(tmp_path: Path, suite: Path, monkeypatch,
                                                                  capsys) -> None:
    out = tmp_path / "demos"
    monkeypatch.setenv(FAULT_ENV, "exit:1")  # seed 1 kills its worker every time
    summary = run(CollectConfig(suite=suite, episodes=3, workers=1, out=out))
    err = capsys.readouterr().err
    assert "collect worker 0" in err and "exited with code 17 during episode pick/seen #1 (seed 1)" in err
    assert "restarted it, retrying the episode" in err
    assert "eps_per_s" not in err and ("ep/s" in err or "s/ep" in err)  # one rate on the bar: tqdm's own
    assert f"restarted it, that is 2 times on this episode: recorded in {FAILURES} and skipped" in err
    assert summary["episodes"] == 3 and summary["worker_deaths"] == 2 and summary["skipped_after_worker_deaths"] == 1
    assert summary["expert_failures"] == 0 and summary["expert_success_rate"] == 1.0
    assert sorted(k[3] for k in completed_keys(out)) == [0, 2, 3]
    failed = [json.loads(line) for line in (out / FAILURES).read_text().splitlines()]
    assert [f["seed"] for f in failed] == [1] and "exited with code 17" in failed[0]["error"]


@pytest.mark.timeout(300)
def test_kill_9_of_a_worker_is_detected_and_retried(tmp_path: Path, suite: Path) -> None:
    out = tmp_path / "demos"
    proc = _start(_cmd(suite, out, episodes=1), fault="hang:0")  # the worker hangs on seed 0: it is busy
    try:
        first = _wait_for(lambda: _workers_in_group(proc.pid), 120, "the worker to start")
        time.sleep(1.0)
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        _wait_for(lambda: _workers_in_group(proc.pid) - first, 120, "a restarted worker")
        assert proc.poll() is None  # the parent noticed, restarted the worker, and goes on
    finally:
        _kill_group(proc)
    err = proc.stderr.read()
    assert "was killed by SIGKILL during episode pick/seen #0 (seed 0); restarted it, retrying the episode" in err, err


@pytest.mark.timeout(300)
def test_folder_lock_and_parent_kill_leaves_no_workers(tmp_path: Path, suite: Path) -> None:
    out = tmp_path / "demos"
    proc = _start(_cmd(suite, out, episodes=2, workers=2), fault="hang:0")  # worker 0 hangs, worker 1 idles
    try:
        _wait_for(lambda: len(_workers_in_group(proc.pid)) == 2 and _pending(out) >= 1, 180,
                  "both workers and one stored episode")
        # A second collect into the same folder is refused at once, naming the holder.
        with pytest.raises(FolderBusyError, match=rf"in use by `vlabench collect.*` \(PID {proc.pid}\)"):
            run(CollectConfig(suite=suite, episodes=2, workers=2, out=out))
        workers = _workers_in_group(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # the parent only, not its group
        proc.wait(30)
        _wait_for(lambda: not _workers_in_group(proc.pid), 30, f"workers {sorted(workers)} to exit with their parent")
    finally:
        _kill_group(proc)
    # The killed run's lock is gone with it: the rerun resumes and finishes.
    summary = run(CollectConfig(suite=suite, episodes=2, workers=2, out=out))
    assert summary["episodes"] == 2 and sorted(k[3] for k in completed_keys(out)) == [0, 1]


@pytest.mark.timeout(300)
def test_ctrl_c_says_what_is_saved_and_exits_130(tmp_path: Path, suite: Path) -> None:
    out = tmp_path / "demos"
    proc = _start(_cmd(suite, out, episodes=3), fault="hang:2")  # seeds 0 and 1 are stored, then it hangs
    try:
        _wait_for(lambda: _pending(out) >= 2, 180, "two stored episodes")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        _, err = proc.communicate(timeout=60)
        _wait_for(lambda: not _workers_in_group(proc.pid), 30, "the workers to exit")
    finally:
        _kill_group(proc)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("vlabench collect:")]
    want = f"vlabench collect: interrupted; 2 of 3 episodes are on disk in {out}; rerun the same command to resume"
    assert lines == [want], err
