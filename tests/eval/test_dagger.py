"""vlabench dagger: a policy drives collection, the expert labels, every driven episode is stored."""

import numpy as np
import pytest

from vlabench.data.collect import CollectConfig, run
from vlabench.data.manifest import load_manifest, manifest_episodes
from vlabench.data.replay import ReplayConfig, replay
from vlabench.eval.dagger import DaggerConfig
from vlabench.eval.dagger import run as dagger

def test_dagger_round_stores_the_policy_states_with_expert_labels(tmp_path, train_suite):
    suite, demos, out = train_suite(["pick"]), tmp_path / "demos", tmp_path / "round1"
    run(CollectConfig(suite=suite, episodes=2, workers=1, out=demos))
    from vlabench.data.shards import read_episode

    # One DAgger round: two more seeds, driven by a policy that never moves (noop never succeeds).
    summary = dagger(DaggerConfig(suite=suite, episodes=4, workers=1, demos=demos, out=out, policy="noop"))
    assert len(manifest_episodes(load_manifest(demos))) == 2  # the demos it started from are untouched
    shard = next(demos.glob("shard_*.h5"))
    assert (out / shard.name).stat().st_ino == shard.stat().st_ino  # shared, not copied
    assert (out / ".owner.lock").stat().st_ino != (demos / ".owner.lock").stat().st_ino
    assert summary["episodes"] == 4 and summary["policy_episodes"] == 2 and summary["policy_success_rate"] == 0.0
    driven = [e for e in manifest_episodes(load_manifest(out)) if e["index"] >= 2]
    assert len(driven) == 2 and not any(e["success"] for e in driven)  # failed, and stored all the same
    rec = read_episode(out / driven[0]["file"], driven[0]["demo"])
    assert rec["attrs"]["driver"] == "noop" and not rec["attrs"]["success"]
    ran, labels = rec["sim"]["executed_actions"], rec["actions"]
    np.testing.assert_array_equal(ran[:, :6], 0)  # the env ran the policy's actions...
    assert np.abs(labels[:, :3]).max() > 0.5  # ...and the labels are the expert's, which would move the hand
    assert replay(ReplayConfig(data=out, episode=2))["ok"]
    # expert_mix = 1: every step executes the expert, so the driven episode succeeds like a demo.
    mixed = dagger(DaggerConfig(suite=suite, episodes=1, workers=1, out=tmp_path / "mix", policy="noop", expert_mix=1.0))
    assert mixed["policy_success_rate"] == 1.0
    for bad, match in ((dict(policy="noop", expert_mix=1.5), "must be in"),
                       (dict(policy="noop", perturb=0.3), "use one"),
                       (dict(expert_mix=0.5), "--policy is required"),
                       (dict(policy="no/such/run"), "no/such/run"),
                       (dict(policy="noop", demos=tmp_path / "nothing"), "not a demo dataset")):
        with pytest.raises(ValueError, match=match):
            dagger(DaggerConfig(suite=suite, episodes=5, workers=1, out=tmp_path / "bad", **bad))
        assert not (tmp_path / "bad").exists()
