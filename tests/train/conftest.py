"""Fixtures for the training-loop tests: a registered tiny model and a synthetic demo directory."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))


@pytest.fixture
def tiny(monkeypatch):
    """Registers model 'tiny' (tests/train/tiny_train_model.py); returns that module."""
    import tiny_train_model
    from vlabench.models import registry

    monkeypatch.setitem(registry.MODULES, "tiny", "tiny_train_model")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    return tiny_train_model


@pytest.fixture
def demo_dir(tmp_path, monkeypatch):
    """A synthetic demo directory; the loop's dataset hooks are patched to read it (no HDF5)."""
    import tiny_train_model
    from vlabench.train import loop

    monkeypatch.setattr(loop, "make_dataset", lambda d, spec, skip_bad=False, cache=False: tiny_train_model.SyntheticDemos(d, **spec))
    monkeypatch.setattr(loop, "read_dataset_meta", lambda d, skip_bad=False: tiny_train_model.read_synthetic_meta(d))
    return tiny_train_model.write_synthetic_data(tmp_path / "demos", n_episodes=8, T=12)
