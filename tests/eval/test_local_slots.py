"""Tests for the local backend with several env slots per worker process and overlapped inference
(vlabench.eval.local: ``envs_per_worker``, ``overlap``): same episodes whatever the grouping, global slot
numbers, batch sizes, and the failure semantics when a worker holds several slots.

Suites are tiny (64 px, a few steps) so the file stays within about a minute on a loaded 2-core machine.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from eval_suites import write_suite as write_eval_suite
from vlabench.eval.harness import EvalConfig, run
from vlabench.eval.workers import FAULT_ENV
from vlabench.agents.builtin import RandomPolicy

SEED0 = 1_200_000


def write_suite(path: Path, cells: dict[str, list[str]], per_cell: int, max_steps: int) -> Path:
    return write_eval_suite(path, cells, per_cell, max_steps, seed0=SEED0, name="slots")


def records(out: Path) -> dict[tuple, dict]:
    recs = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines() if line.strip()]
    by_key = {(r["task"], r["split"], r["index"], r["seed"]): r for r in recs}
    assert len(by_key) == len(recs), "an episode was recorded twice"
    return by_key


def outcome(r: dict) -> tuple:
    return r["status"], r["success"], r["success_step"], r["steps"], r["instruction"]


class RecordingRandom(RandomPolicy):
    """The random policy, logging per episode (task, split, index) every action it took and every state it
    saw, and per ``act`` call the slots of its rows."""

    def __init__(self) -> None:
        super().__init__()
        self.actions: dict[tuple, list] = defaultdict(list)
        self.states: dict[tuple, list] = defaultdict(list)
        self.frames: dict[tuple, list] = defaultdict(list)
        self.calls: list[list[int]] = []

    def act(self, obs_batch: dict) -> np.ndarray:
        out = super().act(obs_batch)
        self.calls.append(np.asarray(obs_batch["slot"]).tolist())
        for row, key in enumerate(zip(obs_batch["task"], obs_batch["split"], obs_batch["index"].tolist())):
            self.actions[key].append(out[row].tobytes())
            self.states[key].append(np.asarray(obs_batch["state"][row]).tobytes())
            self.frames[key].append(hash(obs_batch["image"][row].tobytes() + obs_batch["wrist_image"][row].tobytes()))
        return out


def run_recorded(monkeypatch, suite: Path, out: Path, **kw) -> tuple[dict, RecordingRandom]:
    policy = RecordingRandom()
    run(EvalConfig(suite=suite, out=out, **kw), policy=policy)
    return records(out), policy


def test_same_episodes_whatever_the_slots_and_grouping(tmp_path, monkeypatch) -> None:
    """workers=1/envs_per_worker=1 and workers=2/envs_per_worker=4 (overlapped) give the same episodes:
    same outcomes, and every episode saw the same states and took the same actions."""
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen", "unseen_colors"]},
                        per_cell=4, max_steps=6)
    one, p1 = run_recorded(monkeypatch, suite, tmp_path / "w1", workers=1, envs_per_worker=1)
    many, p8 = run_recorded(monkeypatch, suite, tmp_path / "w2e4", workers=2, envs_per_worker=4, overlap="on")
    assert len(one) == 12 and set(one) == set(many)
    assert all(r["status"] == "ok" for r in one.values())
    assert {k: outcome(r) for k, r in one.items()} == {k: outcome(r) for k, r in many.items()}
    assert dict(p1.actions) == dict(p8.actions) and dict(p1.states) == dict(p8.states)
    assert dict(p1.frames) == dict(p8.frames)
    assert len(p1.actions) == 12 and all(len(a) == 6 for a in p1.actions.values())
    # one slot: one row per call; 8 slots in two groups (even/odd slot numbers), act batches of up to 4
    assert {tuple(c) for c in p1.calls} == {(0,)}
    assert set().union(*map(set, p8.calls)) == set(range(8))
    assert max(map(len, p8.calls)) == 4
    assert all(len({s % 2 for s in c}) == 1 for c in p8.calls)


def test_frames_pickled_or_through_shared_memory_are_the_same(tmp_path, monkeypatch) -> None:
    from vlabench.eval.local import LocalBackend

    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"], "push": ["seen"]}, per_cell=2, max_steps=4)
    shm, p_shm = run_recorded(monkeypatch, suite, tmp_path / "shm", workers=2, envs_per_worker=2)
    monkeypatch.setattr(LocalBackend, "image_buffers", False)
    pickled, p_pickled = run_recorded(monkeypatch, suite, tmp_path / "pickled", workers=2, envs_per_worker=2)
    assert {k: outcome(r) for k, r in shm.items()} == {k: outcome(r) for k, r in pickled.items()}
    assert len(p_shm.frames) == 4 and dict(p_shm.frames) == dict(p_pickled.frames)
    assert dict(p_shm.actions) == dict(p_pickled.actions)


def test_image_buffers_round_trip_fallback_and_unlink() -> None:
    from multiprocessing import shared_memory

    from vlabench.eval.workers import ImageBuffers

    main = ImageBuffers(2, 8, 4)
    n_slots, front, wrist, name = main.spec()
    worker = ImageBuffers(n_slots, front, wrist, name=name)  # what a worker process attaches to
    rng = np.random.default_rng(0)
    img, wr = rng.integers(0, 255, (8, 8, 3), np.uint8), rng.integers(0, 255, (4, 4, 3), np.uint8)
    state = np.arange(8, dtype=np.float32)
    sent = worker.put(1, {"image": img, "wrist_image": wr, "state": state, "instruction": "x"})
    assert sent["image"] is None and sent["wrist_image"] is None and sent["state"] is state
    got = main.get(1, sent)
    np.testing.assert_array_equal(got["image"], img)
    np.testing.assert_array_equal(got["wrist_image"], wr)
    assert not main.views[0][0].any()  # slot 0's buffer untouched
    big = np.ones((16, 16, 3), np.uint8)  # does not fit the buffer: travels in the reply
    sent = worker.put(0, {"image": big, "wrist_image": wr})
    assert sent["image"] is big and sent["wrist_image"] is None
    assert main.get(0, sent)["image"] is big
    worker.close()
    main.close(unlink=True)
    with pytest.raises(FileNotFoundError):
        shared_memory.SharedMemory(name=name)


@pytest.mark.parametrize("overlap", ["off", "auto"])  # auto: off for a policy on the CPU
def test_without_overlap_one_act_serves_every_slot(tmp_path, monkeypatch, overlap) -> None:
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=6, max_steps=4)
    recs, policy = run_recorded(monkeypatch, suite, tmp_path / "out", workers=2, envs_per_worker=3, overlap=overlap)
    assert len(recs) == 6 and all(outcome(r)[:4] == ("ok", False, None, 4) for r in recs.values())
    # all six episodes start together, so every act call has all six slots, global numbers 0..5
    assert policy.calls == [list(range(6))] * 4


def test_slots_spread_over_workers_when_episodes_are_few(tmp_path, monkeypatch) -> None:
    """3 episodes on workers=2 x envs_per_worker=8: 2 workers with 2 slots each, not one worker with 3."""
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=3, max_steps=3)
    recs, policy = run_recorded(monkeypatch, suite, tmp_path / "out", workers=2, envs_per_worker=8, overlap="off")
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs.values())
    assert set().union(*map(set, policy.calls)) == {0, 1, 2}


@pytest.mark.parametrize("fault,needle,overlap", [("exit", "exited with code 17", "on"), ("hang", "hung", "on"),
                                                  ("exit", "exited with code 17", "off")])
def test_dead_worker_fails_only_the_episodes_of_its_slots(tmp_path, monkeypatch, fault, needle, overlap) -> None:
    """Worker 0 holds slots 0 and 1 (episodes 0 and 1); it dies (or hangs) on episode 1's first step. Both
    of its episodes are errors, worker 1's are not, and the restarted worker runs the rest of the queue.
    With overlap, slot 0's step was a message of its own, already answered: its error says it was lost
    with another episode's worker; in lockstep both steps were one message and both are blamed alike."""
    monkeypatch.setenv(FAULT_ENV, f"{fault}:{SEED0 + 1}")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=7, max_steps=3)
    res = run(EvalConfig(suite=suite, policy="noop", workers=2, envs_per_worker=2, overlap=overlap,
                         out=tmp_path / "out", step_timeout_s=3))
    by_seed = {r["seed"]: r for r in records(tmp_path / "out").values()}
    assert sorted(by_seed) == [SEED0 + i for i in range(7)]
    bad = by_seed[SEED0 + 1]
    assert bad["status"] == "error" and needle in bad["error"] and "another episode" not in bad["error"]
    lost = by_seed[SEED0]  # same worker process, its env died with it
    assert lost["status"] == "error" and needle in lost["error"]
    assert ("another episode" in lost["error"]) == (overlap == "on")
    for i in range(2, 7):
        assert by_seed[SEED0 + i]["status"] == "ok" and by_seed[SEED0 + i]["steps"] == 3, by_seed[SEED0 + i]
    assert res["overall"]["errors"] == 2 and res["overall"]["n"] == 7


def test_env_raising_fails_only_its_episode(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv(FAULT_ENV, f"raise:{SEED0 + 1}")
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=4, max_steps=3)
    run(EvalConfig(suite=suite, policy="noop", workers=1, envs_per_worker=4, out=tmp_path / "out"))
    by_seed = {r["seed"]: r for r in records(tmp_path / "out").values()}
    assert by_seed[SEED0 + 1]["status"] == "error" and "injected fault" in by_seed[SEED0 + 1]["error"]
    assert all(by_seed[SEED0 + i]["status"] == "ok" and by_seed[SEED0 + i]["steps"] == 3 for i in (0, 2, 3))


def test_bad_options_are_refused_before_writing(tmp_path) -> None:
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=1, max_steps=3)
    with pytest.raises(ValueError, match="envs_per_worker must be >= 1, got 1 and 0"):
        run(EvalConfig(suite=suite, policy="noop", envs_per_worker=0, out=tmp_path / "out"))
    with pytest.raises(ValueError, match="unknown overlap 'yes'; valid: auto, on, off"):
        run(EvalConfig(suite=suite, policy="noop", overlap="yes", out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


class ThreadProbe(RandomPolicy):
    """Records torch's intra-op thread count inside every act."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()

    def act(self, obs_batch: dict) -> np.ndarray:
        import torch

        self.threads.add(torch.get_num_threads())
        return super().act(obs_batch)


@pytest.mark.parametrize("act_threads", [0, 3])
def test_act_threads_apply_during_the_run_only(tmp_path, monkeypatch, act_threads) -> None:
    import torch

    from vlabench.eval.local import act_threads as resolve

    policy = ThreadProbe()
    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=2, max_steps=2)
    before = torch.get_num_threads()
    run(EvalConfig(suite=suite, workers=2, act_threads=act_threads, out=tmp_path / "out"), policy=policy)
    cores = len(os.sched_getaffinity(0))
    assert policy.threads == {act_threads or max(1, cores - 2)}
    assert torch.get_num_threads() == before
    assert resolve(0, 1) == max(1, cores - 1) and resolve(-1, 4) is None and resolve(5, 4) == 5


def test_sweep_removes_only_buffers_of_dead_runs(tmp_path) -> None:
    import subprocess
    import sys

    from vlabench.eval.workers import ImageBuffers

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    names = {"dead": f"{ImageBuffers.PREFIX}{gone.stdout.strip()}_0a", "live": f"{ImageBuffers.PREFIX}{os.getpid()}_0b",
             "other host": "vlabench_eval_zzzzzzzz_1_0c", "not ours": "psm_0d"}
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    assert ImageBuffers.sweep_stale(str(tmp_path)) == [names["dead"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(v for k, v in names.items() if k != "dead")


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="needs /dev/shm")
def test_buffers_of_a_killed_run_are_swept_by_the_next(tmp_path) -> None:
    """SIGKILL to the whole process group (resource tracker included) leaves the frame buffers behind; the
    next run removes them, and a finished run leaves none of its own."""
    import signal
    import subprocess
    import sys
    import time

    from vlabench.eval.workers import ImageBuffers

    suite = write_suite(tmp_path / "s.toml", {"pick": ["seen"]}, per_cell=6, max_steps=30)
    out = tmp_path / "out"
    code = (f"from vlabench.eval.harness import EvalConfig, run; "
            f"run(EvalConfig(suite={str(suite)!r}, policy='noop', workers=1, envs_per_worker=2, out={str(out)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", code], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    mine = f"{ImageBuffers.PREFIX}{proc.pid}_"
    try:
        deadline = time.monotonic() + 120
        log = out / "episodes.jsonl"
        while time.monotonic() < deadline and not (log.is_file() and log.read_text().strip()):
            time.sleep(0.1)  # an episode has ended: the workers' frame buffers exist
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert [n for n in os.listdir("/dev/shm") if n.startswith(mine)], "the killed run should have left its buffers"
    run(EvalConfig(suite=suite, policy="noop", workers=1, envs_per_worker=2, out=out))
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(mine)]
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"{ImageBuffers.PREFIX}{os.getpid()}_")]
    assert len(records(out)) == 6
