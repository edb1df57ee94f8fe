"""Does shared memory beat pickling for the camera images a worker sends back each step?

The local eval backend (vlabench.eval.local) gets every observation from a worker process over a Pipe:
the reply dict, images included, is pickled, written to the pipe, read and unpickled. The alternative
is one ``multiprocessing.shared_memory`` buffer per slot that the worker writes the images into, so
only the small rest of the reply crosses the pipe. This benchmark measures both, end to end, as the
main process sees them: send a request, wait for the reply, stack the ``image``/``wrist_image`` rows
into the (n, H, W, 3) batch ``policy.act`` receives. The worker does no env work, so the time is pure
transport. The reference, measured in the same run, is one real env step at the same image sizes:
the transport cost reads as a fraction of the stepping it rides on.

    python benchmarks/ipc_images.py [--sizes 128:84,128:128,256:256] [--slots 1,8,32] [--rounds 300]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from multiprocessing import shared_memory

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _fake_obs(front: int, wrist: int, rng: np.random.Generator) -> dict:
    return {"image": rng.integers(0, 255, (front, front, 3), dtype=np.uint8),
            "wrist_image": rng.integers(0, 255, (wrist, wrist, 3), dtype=np.uint8),
            "state": rng.normal(size=8).astype(np.float32), "instruction": "pick up the red block"}


def _worker(conn, front: int, wrist: int, n_slots: int, shm_names: list[str] | None) -> None:
    """Reply to each request with ``n_slots`` observations, through the pipe or through shared memory."""
    rng = np.random.default_rng(0)
    obs = [_fake_obs(front, wrist, rng) for _ in range(n_slots)]
    views = []
    if shm_names:
        shms = [shared_memory.SharedMemory(name=n) for n in shm_names]
        for shm in shms:
            img = np.ndarray((front, front, 3), np.uint8, shm.buf, 0)
            wr = np.ndarray((wrist, wrist, 3), np.uint8, shm.buf, front * front * 3)
            views.append((img, wr))
    while conn.recv() != "stop":
        replies = []
        for i, o in enumerate(obs):
            if views:
                views[i][0][...] = o["image"]  # what the worker would do with the env's fresh frame
                views[i][1][...] = o["wrist_image"]
                replies.append({"obs": {"state": o["state"], "instruction": o["instruction"]}, "success": False})
            else:
                replies.append({"obs": o, "success": False})
        conn.send(replies)
    if views:
        del views, img, wr
        for shm in shms:
            shm.close()


def transport_ms(front: int, wrist: int, n_slots: int, rounds: int, use_shm: bool) -> float:
    """Mean ms per round trip of one message carrying ``n_slots`` observations, batch stacking included."""
    ctx = mp.get_context("spawn")
    shms = [shared_memory.SharedMemory(create=True, size=front * front * 3 + wrist * wrist * 3)
            for _ in range(n_slots)] if use_shm else []
    views = [(np.ndarray((front, front, 3), np.uint8, s.buf, 0),
              np.ndarray((wrist, wrist, 3), np.uint8, s.buf, front * front * 3)) for s in shms]
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_worker, args=(child, front, wrist, n_slots, [s.name for s in shms] or None))
    proc.start()
    try:
        for _ in range(10):  # warm-up
            parent.send("go")
            parent.recv()
        t0 = time.perf_counter()
        for _ in range(rounds):
            parent.send("go")
            replies = parent.recv()
            if use_shm:
                image = np.stack([v[0] for v in views])
                wrist_batch = np.stack([v[1] for v in views])
            else:
                image = np.stack([r["obs"]["image"] for r in replies])
                wrist_batch = np.stack([r["obs"]["wrist_image"] for r in replies])
            assert image.shape == (n_slots, front, front, 3) and wrist_batch.shape[0] == n_slots
        return 1000 * (time.perf_counter() - t0) / rounds
    finally:
        parent.send("stop")
        proc.join(10)
        del views
        for s in shms:
            s.close()
            s.unlink()


def env_step_ms(front: int, wrist: int, steps: int = 60) -> float:
    """Reference: mean ms of one real env step (noop action) at these image sizes, in this process."""
    from vlabench.env import make_env

    env = make_env("pick", "seen", image_size=front, wrist_size=wrist, max_steps=steps + 10)
    env.reset(seed=1_500_000)
    a = np.zeros(7, np.float32)
    a[6] = -1
    env.step(a)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(a)
    ms = 1000 * (time.perf_counter() - t0) / steps
    env.close()
    return ms


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="128:84,128:128,256:256", help="FRONT:WRIST pixel sizes, comma separated")
    ap.add_argument("--slots", default="1,8,32", help="observations per message (envs_per_worker)")
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args(argv)
    print(f"# image transport, worker -> main ({os.cpu_count()} cores, load avg {os.getloadavg()[0]:.1f} at start)\n")
    print("| front | wrist | slots/msg | env step ms (ref) | pickle ms/msg | shm ms/msg | pickle % of stepping | "
          "shm % of stepping |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        front, wrist = map(int, size.split(":"))
        step = env_step_ms(front, wrist)
        for n in map(int, args.slots.split(",")):
            pk = transport_ms(front, wrist, n, args.rounds, use_shm=False)
            sh = transport_ms(front, wrist, n, args.rounds, use_shm=True)
            print(f"| {front} | {wrist} | {n} | {step:.2f} | {pk:.3f} | {sh:.3f} | {100 * pk / (n * step):.1f}% | "
                  f"{100 * sh / (n * step):.1f}% |", flush=True)


if __name__ == "__main__":
    main()
