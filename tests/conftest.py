import os
import signal

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
