"""The feature-point policy (vlabench.models.visuomotor) and its spatial softmax: where the points land,
cached and live maps agreeing, learning, save/load, and the closed-loop policy's state history."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlabench.env import PRIVILEGED_DIM
from vlabench.models.blocks.aux_geometry import AUX_FIELD_COLUMNS
from vlabench.models.blocks.spatial_softmax import SpatialSoftmax
from vlabench.models.visuomotor import VisuomotorConfig, VisuomotorModel, VisuomotorPolicy

STATS = {
    "action": {"min": [-1.0] * 7, "max": [1.0] * 7},
    "state": {"min": [-1.0] * 8, "max": [1.0] * 8},
    "privileged": {"min": [-1.0] * PRIVILEGED_DIM, "max": [1.0] * PRIVILEGED_DIM},
}


def tiny(**kw) -> VisuomotorConfig:
    return VisuomotorConfig(**{"preset": "tiny", "text_encoder": "hash", "horizon": 3, **kw})


def frames(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def batch(model: VisuomotorModel, B: int = 4, seed: int = 0) -> dict:
    """A training batch as the dataset serves it: cached float16 trunk maps of n_obs frames per camera."""
    g = torch.Generator().manual_seed(seed)
    T = model.cfg.n_obs_steps
    out = {f"{cam}_features": torch.stack([model.encode_frames(frames(T, size, seed + i)) for i in range(B)])
           for cam, size in (("image", 32), ("wrist_image", 24)) if cam in model.cameras}
    out.update(state=torch.rand(B, T, 8, generator=g) * 2 - 1, instruction=[f"pick object {i}" for i in range(B)],
               action=torch.rand(B, model.cfg.horizon, 7, generator=g) * 2 - 1,
               action_is_pad=torch.zeros(B, model.cfg.horizon, dtype=torch.bool),
               privileged=torch.rand(B, T, PRIVILEGED_DIM, generator=g) * 2 - 1)
    return out


def _inputs(model: VisuomotorModel, b: dict) -> tuple:
    return {cam: b[f"{cam}_features"][:, -1] for cam in model.cameras}, b["instruction"], b["state"]


def test_spatial_softmax_points_at_the_hot_cell() -> None:
    maps = torch.full((1, 2, 5, 7), -50.0)
    maps[0, 0, 1, 6] = 50.0  # row 1 of 5, column 6 of 7
    maps[0, 1, 4, 0] = 50.0
    pts = SpatialSoftmax()(maps)
    torch.testing.assert_close(pts, torch.tensor([[[1.0, -0.5], [-1.0, 1.0]]]), atol=1e-4, rtol=0)
    even = SpatialSoftmax()(torch.zeros(1, 1, 4, 4))  # a flat map points at the centre
    torch.testing.assert_close(even, torch.zeros(1, 1, 2))
    with pytest.raises(ValueError, match=r"\(N, K, h, w\)"):
        SpatialSoftmax()(torch.zeros(4, 4))


def test_geometry_offset_weight_counts_frames_where_the_target_is_away_from_the_hand() -> None:
    from vlabench.contracts import privileged_slice
    from vlabench.models.blocks.aux_geometry import aux_geometry_loss

    priv = torch.zeros(2, 1, PRIVILEGED_DIM)
    priv[1, 0, privileged_slice("target_minus_ee")] = torch.tensor([0.3, 0.4, 0.0])  # 50 cm away; frame 0: under it
    center, half = torch.zeros(12), torch.ones(12)
    wrong_near, wrong_far = torch.zeros(2, 12), torch.zeros(2, 12)
    wrong_near[0, 0], wrong_far[1, 0] = 1.0, 1.0
    for wrong in (wrong_near, wrong_far):  # both right about the offset: one unit wrong on one frame each
        wrong[1, AUX_FIELD_COLUMNS["target_minus_ee"]] = priv[1, 0, privileged_slice("target_minus_ee")]
    near = aux_geometry_loss(wrong_near, priv, center, half)[0]
    assert aux_geometry_loss(wrong_far, priv, center, half)[0] == pytest.approx(float(near))  # unweighted: equal
    # weighted 1 + 2 * 5 = 11 against 1, normalized to mean 1: the far frame's error counts 11 / 6, the near one 1 / 6
    assert float(aux_geometry_loss(wrong_far, priv, center, half, 2.0)[0]) == pytest.approx(float(near) * 11 / 6)
    assert float(aux_geometry_loss(wrong_near, priv, center, half, 2.0)[0]) == pytest.approx(float(near) / 6)
    with pytest.raises(ValueError, match="geometry_offset_weight"):
        tiny(geometry_offset_weight=-1.0)


def test_config_validation() -> None:
    assert VisuomotorConfig().resolved().channels == 32 and VisuomotorConfig().channels is None
    with pytest.raises(ValueError, match="multiple of 8"):
        tiny(channels=12)
    with pytest.raises(ValueError, match="feature_stride"):
        tiny(feature_stride=32)
    with pytest.raises(ValueError, match="unknown backbone"):
        tiny(backbone="resnet")
    with pytest.raises(ValueError, match="horizon must be >= 1"):
        tiny(horizon=0)
    assert VisuomotorConfig(pretrained=True).for_loading().pretrained is False


def test_cached_maps_and_live_frames_give_the_same_actions_and_the_trunk_stays_frozen() -> None:
    torch.manual_seed(0)
    model = VisuomotorModel(tiny(), STATS).eval()
    spec = model.data_spec()
    assert spec["image_keys"] == () and sorted(spec["features"]) == ["image", "wrist_image"] and spec["privileged"]
    enc = spec["features"]["wrist_image"]
    assert enc.stream == "wrist_image" and enc.describe()["family"] == "visuomotor"
    live = frames(3, 24)
    cached = torch.from_numpy(enc.encode(live.permute(0, 2, 3, 1).numpy()))
    torch.testing.assert_close(cached, model.encode_frames(live))  # what training reads = what the policy computes
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("image_encoder.net.") for n in trainable)
    fp = enc.fingerprint()
    assert model.trunk_encoder("wrist_image").fingerprint() == fp
    with torch.no_grad():
        next(model.image_encoder.net.conv_stem.parameters()).add_(1.0)
    assert model.trunk_encoder("wrist_image").fingerprint() != fp  # other trunk weights: another cache


def test_learns_a_batch_and_reports_geometry_error_in_cm() -> None:
    torch.manual_seed(0)
    model = VisuomotorModel(tiny(preset="base", backbone="tiny", pretrained=False, keypoints=4), STATS).train()
    b = batch(model, B=8)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-3)
    metrics = model.compute_loss(b)[1]
    assert {"l1", "aux_loss", "aux_cm_target_pos", "aux_cm_goal_minus_target", "loss"} <= set(metrics)
    for _ in range(150):
        opt.zero_grad()
        model.compute_loss(b)[0].backward()
        opt.step()
    after = model.compute_loss(b)[1]
    assert after["loss"] < 0.3 * metrics["loss"]
    assert after["aux_cm_target_pos"] < metrics["aux_cm_target_pos"]
    no_aux = VisuomotorModel(tiny(aux_privileged=0.0), STATS)
    assert not no_aux.data_spec()["privileged"] and set(no_aux.compute_loss(b)[1]) == {"l1", "loss"}
    fed = VisuomotorModel(tiny(geometry_input=True), STATS)  # the geometry estimate is also the controller's input
    assert fed.controller[0].in_features == no_aux.controller[0].in_features + 12
    assert fed.compute_loss(b)[1]["aux_loss"] > 0
    with pytest.raises(ValueError, match="need the geometry head"):
        tiny(geometry_input=True, aux_privileged=0.0)
    front = VisuomotorModel(tiny(geometry_from_front=True), STATS)  # the head reads the front points only
    assert front.aux_head[0].in_features == 2 * 4 + 8
    b_wrist = {**b, "wrist_image_features": torch.zeros_like(b["wrist_image_features"])}
    front.eval()
    geo = front(*_inputs(front, b))[1]
    torch.testing.assert_close(geo, front(*_inputs(front, b_wrist))[1])
    raw = geo * front.aux_half_range + front.aux_center  # target - hand is the target estimate - the state's hand
    cols = AUX_FIELD_COLUMNS
    torch.testing.assert_close(raw[:, cols["target_minus_ee"]], raw[:, cols["target_pos"]] - b["state"][:, -1, :3])
    moved = {**b, "state": b["state"] + 0.1}
    torch.testing.assert_close(front(*_inputs(front, moved))[1][:, cols["target_pos"]], geo[:, cols["target_pos"]])
    with pytest.raises(ValueError, match=r"state must be \(B, 2, 8\)"):
        model.compute_loss({**b, "state": b["state"][:, :1]})


def test_policy_round_trip_state_history_and_errors(tmp_path) -> None:
    from vlabench.agents.spec import PolicySpec
    from vlabench.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    cfg = tiny()
    model = VisuomotorModel(cfg, STATS)
    ckpt = save_checkpoint(tmp_path / "ckpt", model, "visuomotor", cfg, {}, STATS, {"manifest_hash": "t"})
    policy = PolicySpec.parse(str(ckpt), ["ensemble_decay=0.5"]).build("cpu")
    assert isinstance(policy, VisuomotorPolicy) and policy.ensemble_decay == 0.5
    obs = {"image": frames(2, 32).permute(0, 2, 3, 1).numpy(), "wrist_image": frames(2, 24).permute(0, 2, 3, 1).numpy(),
           "state": np.zeros((2, 8), np.float32), "instruction": ["pick a", "pick b"], "slot": np.array([0, 1]),
           "is_first": np.array([True, True])}
    seen = []
    real = policy.model.predict_action_chunk
    policy.model.predict_action_chunk = lambda maps, ins, state: (seen.append(state.clone()), real(maps, ins, state))[1]
    a = policy.act(obs)
    assert a.shape == (2, 7) and a.dtype == np.float32 and np.abs(a).max() <= 1
    policy.act({**obs, "state": np.ones((2, 8), np.float32), "is_first": np.array([False, True])})
    np.testing.assert_array_equal(seen[0].numpy(), 0.0)  # a new episode's history is its first state, repeated
    np.testing.assert_array_equal(seen[1][0].numpy(), [[0.0] * 8, [1.0] * 8])  # slot 0 goes on: oldest first
    np.testing.assert_array_equal(seen[1][1].numpy(), 1.0)  # slot 1 started again
    with pytest.raises(KeyError, match="wrist_image"):
        policy.act({k: v for k, v in obs.items() if k != "wrist_image"})
    with pytest.raises(KeyError, match="state"):
        policy.act({k: v for k, v in obs.items() if k != "state"})
    with pytest.raises(ValueError, match="ensemble_decay"):
        VisuomotorPolicy(model, ensemble_decay=-1)
