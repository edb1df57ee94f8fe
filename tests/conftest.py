import os
import signal
from pathlib import Path

import pytest

# Tests run on 2-core CI machines: one intra-op thread per process keeps parallel workers from thrashing.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# A test run started in the background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and
# so would every process the Ctrl-C tests start, which then never see their Ctrl-C. Installing Python's
# handler here means exec'd children start with the default disposition again.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


TRAIN_SUITE = """
name = "test-train"
kind = "train"
seed_range = [0, 500]
episodes_per_cell = 1
[env]
image_size = 32
wrist_size = 24
{cells}
"""


@pytest.fixture
def train_suite(tmp_path):
    """A factory: task names -> a tiny train suite (32 px frames, one seen episode per cell) in tmp_path."""

    def make(tasks) -> Path:
        cells = "\n".join(f'[[cells]]\ntask = "{t}"\nsplits = ["seen"]' for t in tasks)
        path = tmp_path / "train.toml"
        path.write_text(TRAIN_SUITE.format(cells=cells))
        return path

    return make
