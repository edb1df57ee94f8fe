import numpy as np
import pytest
import torch

from vlabench.models.action_tokenizer import ActionTokenizer

Q01 = np.array([-0.8, -0.5, -0.3, -0.2, -0.6, -0.9, -1.0])
Q99 = np.array([0.7, 0.5, 0.9, 0.1, 0.6, 0.4, 1.0])
STATS = {"action": {"q01": Q01.tolist(), "q99": Q99.tolist()}}


def test_every_bin_decodes_back_to_itself_in_every_dim():
    tok = ActionTokenizer(STATS, n_bins=256)
    k = np.repeat(np.arange(256)[:, None], 7, axis=1)  # (256, 7)
    assert np.array_equal(tok.encode(tok.decode(k)), k)


def test_round_trip_error_is_at_most_half_a_bin():
    tok = ActionTokenizer(STATS, n_bins=256)
    rng = np.random.default_rng(0)
    a = rng.uniform(Q01, Q99, size=(20000, 7))
    err = np.abs(tok.decode(tok.encode(a)) - a)
    half_bin = (Q99 - Q01) / (2 * 256)  # gripper: range [-1, 1] -> 2 / 512 too
    assert np.all(err <= half_bin * (1 + 1e-4) + 1e-7)
    # Bin centres, not floor: no systematic bias (RT-1's floor gives -0.5 bin).
    bias = (tok.decode(tok.encode(a)) - a).mean(0)
    assert np.all(np.abs(bias) < 0.1 * 2 * half_bin)


def test_torch_input_and_range_checks():
    tok = ActionTokenizer(STATS)
    t = tok.encode(torch.zeros(3, 7))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.int64 and t.shape == (3, 7)
    far = tok.encode(np.full((1, 7), 100.0))
    assert np.all(far == 255)
    with pytest.raises(ValueError, match="action tokens"):
        tok.decode(np.full((1, 7), 256))
