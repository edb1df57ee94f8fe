"""`vlabench offline-eval`: per-cell teacher-forced losses of a checkpoint on held-out demos."""

import json

import numpy as np
import pytest
import torch

from vlabench.data import ShardWriter
from vlabench.eval.offline import OfflineEvalConfig, cell_samples, run, swapped_instructions
from vlabench.models.rt2 import RT2Config, RT2Model
from vlabench.train.checkpoint import save_checkpoint

STATS = {
    "action": {"q01": [-0.5] * 6 + [-1.0], "q99": [0.5] * 6 + [1.0], "min": [-1.0] * 7, "max": [1.0] * 7,
               "mean": [0.0] * 7, "std": [0.3] * 7},
    "state": {k: [0.0] * 8 for k in ("q01", "q99", "min", "max", "mean", "std")},
}
CELLS = [("pad", "symbols"), ("pick", "seen")]


def write_demos(root, lengths, seed0=500_000):
    rng = np.random.default_rng(0)
    with ShardWriter(root, episodes_per_shard=2) as w:
        for i, T in enumerate(lengths):
            task, split = CELLS[i % 2]
            w.write({"obs": {"image": rng.integers(0, 256, (T, 32, 32, 3), dtype=np.uint8),
                             "wrist_image": rng.integers(0, 256, (T, 16, 16, 3), dtype=np.uint8),
                             "state": rng.standard_normal((T, 8)).astype(np.float32)},
                     # pick's actions are all-zero and pad's random, so the two cells score differently
                     "actions": (rng.uniform(-1, 1, (T, 7)) * (task == "pad")).astype(np.float32),
                     "sim": {"object_poses": np.zeros((T, 2, 7), np.float32)},
                     "attrs": {"instruction": f"{task} thing {i}", "task": task, "split": split, "index": i,
                               "seed": seed0 + i, "suite": "unit", "success": True, "n_steps": T,
                               "env_kwargs": "{}"}})
    return root


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = RT2Config(preset="small", text_model_path="tiny", vision_tower="tiny", image_size=32, crop_scale=1.0)
    model = RT2Model(cfg, STATS)
    return save_checkpoint(tmp_path / "ckpt", model, "rt2", cfg, {}, STATS, {})


def test_cell_samples_groups_and_caps():
    keys = [("pad", "symbols", 0, 5), ("pick", "seen", 1, 6), ("pad", "symbols", 2, 7)]
    cells, n = cell_samples(keys, [2, 3, 1], None)
    assert cells == {"pad/symbols": [0, 1, 5], "pick/seen": [2, 3, 4]} and n == {"pad/symbols": 2, "pick/seen": 1}
    cells, n = cell_samples(keys, [2, 3, 1], 1)
    assert cells["pad/symbols"] == [0, 1] and n["pad/symbols"] == 1


def test_scores_every_cell_independently_of_batching(tmp_path, ckpt):
    data = write_demos(tmp_path / "held", [3, 4, 2, 5])
    res = run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data), batch_size=64, out=str(tmp_path / "o.json")))
    cells = res["cells"]
    assert set(cells) == {"pad/symbols", "pick/seen"}
    assert (cells["pad/symbols"]["n_samples"], cells["pick/seen"]["n_samples"]) == (5, 9)
    assert cells["pad/symbols"]["n_episodes"] == cells["pick/seen"]["n_episodes"] == 2
    assert cells["pad/symbols"]["action_loss"] != pytest.approx(cells["pick/seen"]["action_loss"])
    assert json.loads((tmp_path / "o.json").read_text())["cells"] == cells
    # Sample-weighted means: batches of one give the same numbers as one batch per cell.
    small = run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data), batch_size=1))["cells"]
    for name in cells:
        assert small[name]["action_loss"] == pytest.approx(cells[name]["action_loss"], rel=1e-5)
        assert small[name]["action_token_acc"] == pytest.approx(cells[name]["action_token_acc"], rel=1e-5)
    capped = run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data), max_episodes_per_cell=1))["cells"]
    assert (capped["pad/symbols"]["n_samples"], capped["pick/seen"]["n_samples"]) == (3, 4)


def test_refuses_demos_the_checkpoint_trained_on(tmp_path, ckpt):
    data = write_demos(tmp_path / "train", [3, 4])
    info_path = ckpt / "dataset.json"
    info_path.write_text(json.dumps({"path": str(data)}))
    with pytest.raises(ValueError, match="training data"):
        run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data)))
    held = write_demos(tmp_path / "held", [3, 4], seed0=600_000)  # other seeds: accepted
    assert set(run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(held)))["cells"]) == {"pad/symbols", "pick/seen"}


def test_swapped_instructions_stay_within_cells():
    keys = [("pad", "symbols", 0, 5), ("pick", "seen", 1, 6), ("pad", "symbols", 2, 7), ("pad", "symbols", 3, 8)]
    assert swapped_instructions(keys, ["a", "b", "c", "d"]) == ["c", "b", "d", "a"]


def test_swap_instructions_changes_what_the_model_reads(tmp_path, ckpt, monkeypatch):
    data = write_demos(tmp_path / "held", [3, 4, 2, 5])
    seen: list[str] = []
    real = RT2Model.compute_loss

    def spy(self, batch):
        seen.extend(batch["instruction"])
        return real(self, batch)

    monkeypatch.setattr(RT2Model, "compute_loss", spy)
    own = run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data)))
    own_seen, seen[:] = list(seen), []
    swapped = run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data), swap_instructions=True))
    assert swapped["changed_instruction_fraction"] == 1.0 and own["changed_instruction_fraction"] is None
    # Cells in name order (pad/symbols: episodes 0 and 2, pick/seen: 1 and 3), samples in episode order.
    assert own_seen == ["pad thing 0"] * 3 + ["pad thing 2"] * 2 + ["pick thing 1"] * 4 + ["pick thing 3"] * 5
    assert seen == ["pad thing 2"] * 3 + ["pad thing 0"] * 2 + ["pick thing 3"] * 4 + ["pick thing 1"] * 5


def test_bad_arguments_are_refused(tmp_path, ckpt):
    data = write_demos(tmp_path / "held", [3, 4])
    with pytest.raises(ValueError, match="max_episodes_per_cell"):
        run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data), max_episodes_per_cell=0))
    with pytest.raises(ValueError, match="batch_size"):
        run(OfflineEvalConfig(checkpoint=str(ckpt), data=str(data), batch_size=0))
