import pytest
import torch

from vlabench.models.blocks.film_efficientnet import (
    LITE0_N_TENSORS,
    FiLM,
    FilmEfficientNet,
    lite0_weights_path,
    load_positional,
)


def test_film_layer_is_identity_at_init_and_then_modulates():
    film = FiLM(cond_dim=6, channels=4)
    x, c = torch.randn(2, 4, 3, 3), torch.randn(2, 6)
    assert torch.equal(film(x, c), x)
    with torch.no_grad():
        film.gamma.bias.fill_(1.0)  # gamma = 1 -> doubles x
        film.beta.bias.fill_(0.5)
    assert torch.allclose(film(x, c), 2 * x + 0.5)


def test_film_net_identity_at_init_and_conditioning_after_training_step():
    torch.manual_seed(0)
    net = FilmEfficientNet("tiny", cond_dim=10, token_dim=16).eval()
    x = torch.randn(2, 3, 64, 64)
    cond = torch.randn(2, 10)
    with torch.no_grad():
        out = net(x, cond)
        assert out.shape == (2, 16, 2, 2)
        # At init every FiLM is the identity: same as the net without FiLM, and as zero conditioning.
        assert torch.equal(out, net(x, cond, use_film=False))
        assert torch.equal(out, net(x, torch.zeros_like(cond)))
    assert len(net.films) == sum(len(stage) for stage in net.net.blocks)
    # Once the projections are non-zero, different conditions give different features.
    with torch.no_grad():
        for film in net.films:
            film.gamma.weight.normal_(0, 0.1)
        a = net(x, cond)
        b = net(x, cond.flip(0))
    assert not torch.allclose(a, b)


def test_bad_arguments_name_valid_choices():
    with pytest.raises(ValueError, match="lite0"):
        FilmEfficientNet("resnet")
    with pytest.raises(ValueError, match="only for backbone 'lite0'"):
        FilmEfficientNet("tiny", pretrained=True)
    net = FilmEfficientNet("tiny", cond_dim=4, token_dim=8)
    with pytest.raises(ValueError, match="cond must be"):
        net(torch.randn(1, 3, 32, 32), torch.randn(1, 5))


def test_positional_load_reports_shape_mismatch():
    a = FilmEfficientNet("tiny").net
    src = {f"k{i}": v.clone() for i, v in enumerate(a.state_dict().values())}
    assert load_positional(a, src, "test") == len(src)
    key = next(k for k, v in src.items() if v.ndim == 4)
    src[key] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"tensor #0 'k0' has shape \(1, 1, 1, 1\)"):
        load_positional(a, src, "test")
    with pytest.raises(ValueError, match="tensors but the model expects"):
        load_positional(a, dict(list(src.items())[1:]), "test")


@pytest.mark.pretrained
def test_packaged_lite0_weights_load_with_every_shape_checked():
    torch.manual_seed(0)
    net = FilmEfficientNet("lite0", cond_dim=8, token_dim=32, pretrained=True).eval()
    assert net.n_loaded == LITE0_N_TENSORS == 296
    src = list(torch.load(lite0_weights_path(), map_location="cpu", weights_only=True).values())
    dst = list(net.net.state_dict().values())
    # The classifier (last 2 tensors) is dropped after loading; everything else is the ImageNet weights.
    assert len(dst) == LITE0_N_TENSORS - 2
    for s, d in zip(src, dst):
        assert s.shape == d.shape and torch.equal(s.to(d.dtype), d)
    # BN running statistics are non-trivial (a fresh BN has mean 0 / var 1).
    bns = [m for m in net.net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bns) > 40
    assert all(not torch.allclose(m.running_var, torch.ones_like(m.running_var)) for m in bns)
    assert all(m.running_mean.abs().max() > 1e-3 for m in bns)
    # Features on a smooth natural-looking image differ clearly from a random init's.
    rnd = FilmEfficientNet("lite0", cond_dim=8, token_dim=32, pretrained=False).eval()
    rnd.proj.load_state_dict(net.proj.state_dict())
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 128), torch.linspace(0, 1, 128), indexing="ij")
    img = torch.stack([xx, yy, 0.5 * (xx + yy)])[None]
    cond = torch.zeros(1, 8)
    with torch.no_grad():
        f_pre = net(net.normalize(img), cond)
        f_rnd = rnd(rnd.normalize(img), cond)
    assert f_pre.shape == (1, 32, 4, 4)
    assert (f_pre - f_rnd).abs().mean() > 0.1 * f_rnd.abs().mean()


@pytest.mark.parametrize("stride, side", [(16, 6), (8, 12)])
def test_feature_stride_gives_a_finer_map_and_trains_every_parameter(stride, side):
    net = FilmEfficientNet("tiny", cond_dim=8, token_dim=16, feature_stride=stride)
    out = net(torch.randn(2, 3, 96, 96), torch.randn(2, 8))
    assert out.shape == (2, 16, side, side)
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())  # the unused tail was dropped, not left idle


def test_feature_stride_rejects_other_values():
    with pytest.raises(ValueError, match="feature_stride must be 8, 16 or 32"):
        FilmEfficientNet("tiny", cond_dim=8, token_dim=16, feature_stride=4)
