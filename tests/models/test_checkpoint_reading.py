"""The one checkpoint reader refuses damaged weights with one line naming the file (and the tensor)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from vlabench.models.checkpoint import load_model, load_tensors, resolve_checkpoint_dir
from vlabench.models.diffusion import DiffusionConfig, DiffusionModel
from vlabench.train.checkpoint import save_checkpoint

STATS = {k: {"min": [-1.0] * d, "max": [1.0] * d, "q01": [-1.0] * d, "q99": [1.0] * d, "mean": [0.0] * d,
             "std": [1.0] * d} for k, d in (("action", 7), ("state", 8))}


@pytest.fixture
def ckpt(tmp_path):
    cfg = DiffusionConfig(preset="tiny", text_encoder="hash:16")
    return save_checkpoint(tmp_path / "run" / "latest", DiffusionModel(cfg, STATS), "diffusion", cfg, {}, STATS, {})


def test_a_sound_checkpoint_loads(ckpt):
    model, info = load_model(ckpt.parent, "cpu", expect="diffusion")
    assert info.path == ckpt and not model.training


def test_overwritten_bytes_are_refused_naming_the_file(ckpt):
    f = ckpt / "model.safetensors"
    data = bytearray(f.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = b"\xff" * 4096  # what a bad disk block or a stray write looks like
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{f}.*(non-finite values .* in tensor '|damaged)"):
        load_model(ckpt, "cpu")


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_truncated_or_empty_weights_give_one_line_naming_the_file(ckpt, damage):
    f = ckpt / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes({"empty": b"", "truncated": data[: len(data) // 3], "garbage": b"not safetensors at all"}[damage])
    with pytest.raises(ValueError, match=rf"checkpoint file {f} is damaged"):
        load_model(ckpt, "cpu")


def test_nan_in_a_tensor_is_named(tmp_path):
    f = tmp_path / "w.safetensors"
    save_file({"ok": torch.zeros(3), "bad": torch.tensor([0.0, float("nan")])}, str(f))
    with pytest.raises(ValueError, match=r"non-finite values \(NaN or inf\) in tensor 'bad'"):
        load_tensors(f)


def test_wrong_family_and_missing_checkpoint(ckpt, tmp_path):
    with pytest.raises(ValueError, match="holds model 'diffusion', expected 'rt1'"):
        load_model(ckpt, "cpu", expect="rt1")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resolve_checkpoint_dir(tmp_path / "nothing")
    (ckpt / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_model(ckpt, "cpu")


def test_inference_settings_stored_in_the_checkpoint_are_defaults_that_options_override(tmp_path):
    from vlabench.agents.spec import PolicySpec
    from vlabench.contracts import UserError
    from vlabench.models.checkpoint import inference_defaults, load_policy
    from vlabench.train.config import TrainConfig

    cfg = DiffusionConfig(preset="tiny", text_encoder="hash:16", num_inference_steps=4)
    train = TrainConfig(inference=["num_inference_steps=2"])
    ckpt = save_checkpoint(tmp_path / "latest", DiffusionModel(cfg, STATS), "diffusion", cfg, train, STATS, {})
    assert inference_defaults(ckpt) == {"num_inference_steps": "2"}
    assert load_policy(ckpt, "cpu").num_inference_steps == 2  # typed: the string became the default's int
    assert load_policy(ckpt, "cpu", num_inference_steps="3").num_inference_steps == 3
    desc = PolicySpec.parse(str(ckpt), ["num_inference_steps=3"]).describe()
    assert desc["options"] == {"num_inference_steps": "3"} and desc["inference"] == {"num_inference_steps": "3"}
    assert PolicySpec.parse(str(ckpt)).describe()["inference"] == {"num_inference_steps": "2"}
    bad = save_checkpoint(tmp_path / "bad", DiffusionModel(cfg, STATS), "diffusion", cfg,
                          TrainConfig(inference=["decode=mean"]), STATS, {})
    with pytest.raises(UserError, match=r"policy options \['decode'\] are not options of DiffusionPolicy"):
        load_policy(bad, "cpu")
