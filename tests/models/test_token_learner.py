import torch

from vlabench.models.blocks.token_learner import TokenLearner


def test_shapes_and_default_tokens():
    tl = TokenLearner(dim=32)
    out = tl(torch.randn(3, 32, 5, 4))
    assert out.shape == (3, 8, 32)
    assert TokenLearner(dim=16, num_tokens=4)(torch.randn(2, 16, 3, 3)).shape == (2, 4, 16)


def test_tokens_are_convex_combinations_of_locations():
    # With the same feature vector at every location, any softmax-weighted average returns it.
    torch.manual_seed(0)
    tl = TokenLearner(dim=12, num_tokens=5)
    v = torch.randn(2, 12)
    x = v[:, :, None, None].expand(2, 12, 4, 4).contiguous()
    assert torch.allclose(tl(x), v[:, None].expand(2, 5, 12), atol=1e-5)


def test_gradients_reach_input_and_mlp():
    tl = TokenLearner(dim=8, num_tokens=3)
    x = torch.randn(2, 8, 3, 3, requires_grad=True)
    tl(x).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert tl.mlp[0].weight.grad.abs().sum() > 0
