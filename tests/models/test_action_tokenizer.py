import numpy as np
import pytest
import torch

from vlabench.models.blocks.action_tokenizer import ActionTokenizer

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


def test_expected_value_decoding_matches_argmax_on_one_hot_and_interpolates():
    import torch

    tok = ActionTokenizer(STATS_FOR_EXPECTED, n_bins=16)
    tokens = torch.tensor([[3, 7, 0, 15, 8, 9, 12]])
    one_hot = torch.nn.functional.one_hot(tokens, 16).float()
    np.testing.assert_allclose(tok.decode_expected(one_hot), tok.decode(tokens), atol=1e-6)
    half = (torch.nn.functional.one_hot(torch.tensor([[4] * 7]), 16).float()
            + torch.nn.functional.one_hot(torch.tensor([[6] * 7]), 16).float()) / 2
    np.testing.assert_allclose(tok.decode_expected(half), tok.decode(torch.tensor([[5] * 7])), atol=1e-6)
    with pytest.raises(ValueError, match="n_bins=16"):
        tok.decode_expected(torch.ones(1, 7, 8) / 8)


STATS_FOR_EXPECTED = {"action": {"q01": [-0.5] * 7, "q99": [0.5] * 7, "min": [-1.0] * 7, "max": [1.0] * 7,
                                 "mean": [0.0] * 7, "std": [1.0] * 7}}
