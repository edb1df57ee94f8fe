"""Temporal ensembling of action chunks (ACT, Zhao et al. 2023), per slot, for chunk-predicting policies.

A policy that predicts a chunk ``a_t .. a_{t+H-1}`` every step executes, at step t, the weighted mean of
every live chunk's action for t, weighted ``exp(-decay * i)`` with i = 0 for the oldest chunk: smooth, and
still reacting every step.
"""

from __future__ import annotations

import numpy as np

from vlabench.contracts import SlotState


def ensemble_step(state: SlotState, chunk: np.ndarray | None, decay: float) -> np.ndarray:
    """Add this step's ``chunk`` ``(H, 7)`` (None: no new chunk) to the slot's live chunks and return the
    ensembled action ``(7,)`` for the current step; every chunk then ages by one step. (SlotMemory gives a
    new episode a new, empty state, so no chunk outlives its episode.)"""
    chunks = state.data.setdefault("chunks", [])
    if chunk is not None:
        chunks.append([np.asarray(chunk), 0])
    chunks[:] = [c for c in chunks if c[1] < len(c[0])]
    if not chunks:
        raise ValueError("temporal ensembling has no chunk covering this step: predict one on the slot's first step")
    actions = np.stack([c[0][c[1]] for c in chunks])
    w = np.exp(-decay * np.arange(len(chunks)))
    for c in chunks:
        c[1] += 1
    return ((w[:, None] * actions).sum(0) / w.sum()).astype(np.float32)
