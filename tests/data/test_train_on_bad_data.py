"""`vlabench train` on a dataset with a changed shard: refused before it starts, naming the shard, and
trained on the readable shards with --skip-bad. Also what the command prints and its help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlabench.cli import main

RECIPE = """[model]
name = "rt1"
preset = "small"
text_encoder = "hash"
n_layers = 1
d_model = 32
n_heads = 2
image_size = 32
n_frames = 1
tokens_per_frame = 4

[train]
steps = 2
batch_size = 4
num_workers = 0
val_fraction = 0.0
warmup_steps = 1
device = "cpu"
"""


def _corrupt_one_shard(root: Path) -> Path:
    shard = sorted(root.glob("shard_*.h5"))[1]
    data = bytearray(shard.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 2000] = bytes(2000)  # same size: only the recorded checksum can tell
    shard.write_bytes(bytes(data))
    return shard


def test_corrupt_shard_refused_then_skipped(tmp_path, synth, capsys):
    root = synth.write_dataset(tmp_path / "demos", synth.make_episodes(6))
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    shard = _corrupt_one_shard(root)
    args = ["train", "--recipe", str(recipe), "--data", str(root), "--out", str(tmp_path / "run")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"corrupt or truncated demo shard {shard}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert main(args + ["--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert f"checkpoint: {tmp_path / 'run' / 'latest'}" in out
    info = json.loads((tmp_path / "run" / "latest" / "dataset.json").read_text())
    assert info["env_kwargs"] == {"image_size": 128}  # what the demos were recorded with, for eval's check
    assert info["n_samples"] < sum(len(e["actions"]) for e in synth.make_episodes(6))


def test_help_without_a_recipe_explains_and_lists_recipes(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--recipe" in out and "--skip-bad" in out and "rt1_small.toml" in out
