"""`vlabench pipeline --profile smoke`: every stage end to end on the CPU, then resume, slices and packing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from vlabench.pipeline.command import PipelineConfig, run
from vlabench.pipeline.profile import load_profile
from vlabench.pipeline.state import StageChanged, all_stages

PROFILE = "smoke"


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pipeline") / "smoke"
    run(PipelineConfig(profile=PROFILE, out=out))
    return out


def _stages(out: Path) -> dict[str, dict]:
    return {r["stage"] + (f":{r['item']}" if r.get("item") else ""): r for r in all_stages(out)}


def test_every_stage_ran_and_recorded_its_inputs_budget_and_time(smoke):
    profile = load_profile(PROFILE)
    stages = _stages(smoke)
    expected = ({"collect:train", "collect:probe", "vqa", "report"} | {f"train:{m.name}" for m in profile.models}
                | {f"eval:{p}" for p in profile.policies} | {f"probe:{m.name}" for m in profile.models})
    assert set(stages) == expected
    for label, rec in stages.items():
        assert rec["status"] == "done", (label, rec)
        assert rec["inputs"] and all(isinstance(v, str) and v for v in rec["inputs"].values()), label
        assert rec["wall_s"] >= 0 and len(rec["invocations"]) == 1
    assert stages["train:rt1"]["outputs"]["steps"] == 4 and stages["train:rt1"]["budget"]["steps"] == 4
    assert "vqa" in stages["train:rt2_cotrain"]["inputs"] and "vqa" not in stages["train:rt2_robot_only"]["inputs"]
    assert "uses" in stages["train:localizer"]["inputs"] and "uses" not in stages["train:state_mlp"]["inputs"]


def test_a_model_that_uses_another_trains_after_it_on_its_run(smoke):
    from vlabench.models.checkpoint import load_model

    stages = _stages(smoke)
    # the train stage runs two models at a time, yet the localizer starts only once state_mlp has finished
    assert stages["train:localizer"]["invocations"][0]["started"] >= stages["train:state_mlp"]["invocations"][0]["finished"]
    spec = json.loads((smoke / "train" / "localizer.spec.json").read_text())
    assert spec["model"]["controller"] == str(smoke / "train" / "state_mlp")
    localizer, _ = load_model(smoke / "train" / "localizer", "cpu")
    controller, _ = load_model(smoke / "train" / "state_mlp", "cpu")
    assert list(localizer.cfg.controller_config["hidden"]) == list(controller.cfg.hidden) == [16]
    for name, w in controller.state_dict().items():
        assert torch.equal(localizer.controller.state_dict()[name], w), name


def test_uses_must_name_an_earlier_model(tmp_path):
    text = Path(load_profile(PROFILE).path).read_text()
    for bad, match in ((text.replace('uses = { controller = "state_mlp" }', 'uses = { controller = "rt3" }'),
                        r"uses \{'controller': 'rt3'\}, which must name models listed before it"),
                       (text.replace('uses = { controller = "state_mlp" }', 'uses = "state_mlp"'),
                        "uses must be a table of model names"),
                       (text.replace('model = { preset = "tiny", text_encoder = "hash" }',
                                     'model = { preset = "tiny", text_encoder = "hash", controller = "x" }'),
                        r"sets \['controller'\] both in model and in uses")):
        prof = tmp_path / "bad.toml"
        prof.write_text(bad)
        with pytest.raises(ValueError, match=match):
            load_profile(prof)


def test_retraining_a_used_model_changes_the_users_inputs(smoke, tmp_path):
    from vlabench.pipeline import stages

    out = tmp_path / "copy"
    shutil.copytree(smoke, out, symlinks=True)
    ctx = stages.Context(load_profile(PROFILE), out)
    localizer = ctx.profile.model("localizer")
    before = stages._train_inputs(ctx, localizer, stages._train_spec(ctx, localizer))
    (out / "train" / "state_mlp" / "best").mkdir()
    src = out / "train" / "state_mlp" / "latest"
    for f in src.iterdir():
        shutil.copy(f, out / "train" / "state_mlp" / "best" / f.name)
    cfg = json.loads((out / "train" / "state_mlp" / "best" / "config.json").read_text())
    cfg["note"] = "another run"
    (out / "train" / "state_mlp" / "best" / "config.json").write_text(json.dumps(cfg))
    spec = stages._train_spec(ctx, localizer)
    assert spec["model"]["controller"] == str(out / "train" / "state_mlp" / "best")
    after = stages._train_inputs(ctx, localizer, spec)
    assert after["uses"] != before["uses"] and after["data"] == before["data"]
    with pytest.raises(StageChanged, match="train:localizer finished on other inputs \\(uses changed"):
        run(PipelineConfig(profile=PROFILE, out=out, stages=["train"], models=["localizer"]))


def test_every_policy_is_evaluated_on_one_manifest(smoke):
    profile = load_profile(PROFILE)
    hashes = set()
    for name in profile.policies:
        res = json.loads((smoke / "eval" / name / "results.json").read_text())
        lines = (smoke / "eval" / name / "episodes.jsonl").read_text().splitlines()
        assert res["complete"] and res["overall"]["n"] == len(lines) == 4
        assert res["overall"]["errors"] == 0, name
        hashes.add(res["suite"]["manifest_hash"])
    assert len(hashes) == 1
    rt1 = json.loads((smoke / "eval" / "rt1" / "results.json").read_text())["policy"]
    assert rt1["options"] == {"decode": "mean"} and rt1["checkpoint_hash"]


def test_results_page_has_the_tables_the_benchmark_asks_for(smoke):
    text = (smoke / "report" / "RESULTS.md").read_text()
    for section in ("## Headline", "## Paired comparisons", "## Language probe", "## Budgets and wall time",
                    "## Commands"):
        assert section in text
    headline = text.split("## Headline")[1].split("##")[0]
    for name in load_profile(PROFILE).policies:
        assert f"| {name} |" in headline
    assert "| rt1 | diffusion |" in text and "| rt2_cotrain | rt2_robot_only |" in text and "| rt1 | random |" in text
    probe = text.split("## Language probe")[1].split("##")[0]
    assert probe.count("| pick/seen |") == len(load_profile(PROFILE).models)
    assert (smoke / "report" / "REPORT.md").is_file() and list((smoke / "report").glob("*.png"))


def test_rerun_skips_everything_that_is_done(smoke, capsys):
    before = {k: len(v["invocations"]) for k, v in _stages(smoke).items()}
    run(PipelineConfig(profile=PROFILE, out=smoke, stages=["collect", "train", "eval", "probe"]))
    after = {k: len(v["invocations"]) for k, v in _stages(smoke).items()}
    assert before == after
    assert "train:rt1: done" in capsys.readouterr().out


def test_a_finished_stage_with_changed_inputs_is_refused(smoke, tmp_path):
    prof = tmp_path / "changed.toml"
    text = Path(load_profile(PROFILE).path).read_text().replace(
        'model = { text_encoder = "hash", n_layers = 1,', 'model = { text_encoder = "hash", n_layers = 2,')
    prof.write_text(text)
    with pytest.raises(StageChanged, match=r"train:rt1 finished on other inputs \(overrides changed"):
        run(PipelineConfig(profile=str(prof), out=smoke, stages=["train"], models=["rt1"]))


def test_bad_stage_or_model_names_are_refused(smoke):
    with pytest.raises(ValueError, match="unknown stages.*valid: collect"):
        run(PipelineConfig(profile=PROFILE, out=smoke, stages=["trian"]))
    with pytest.raises(ValueError, match="no model or baseline.*rt1, diffusion"):
        run(PipelineConfig(profile=PROFILE, out=smoke, models=["rt3"]))


def test_pack_then_unpack_resumes_without_redoing_anything(smoke, tmp_path):
    run(PipelineConfig(profile=PROFILE, out=smoke, stages=["pack"]))
    meta = json.loads((smoke / "pack" / "pack.json").read_text())
    assert all((smoke / "pack" / p).stat().st_size <= meta["part_mib"] * 2**20 for p in meta["checkpoint_parts"])
    assert "rt1" in meta["checkpoints"]
    later = tmp_path / "later"
    shutil.copytree(smoke / "pack", tmp_path / "window")
    run(PipelineConfig(profile=PROFILE, out=later, stages=["eval", "report"], models=["rt1", "random"],
                       unpack=tmp_path / "window"))
    assert (later / "train" / "rt1" / "latest" / "model.safetensors").is_file()
    stages = _stages(later)
    assert len(stages["eval:rt1"]["invocations"]) == 1  # restored as done, not rerun
    assert json.loads((later / "eval" / "rt1" / "results.json").read_text())["overall"]["n"] == 4


def test_the_discussion_file_nests_under_results_and_keeps_code_blocks(tmp_path):
    from types import SimpleNamespace

    from vlabench.pipeline.results import discussion_markdown

    path = tmp_path / "DISCUSSION.md"
    ctx = SimpleNamespace(profile=SimpleNamespace(discussion=str(path)))
    assert "Not written yet" in discussion_markdown(ctx) and str(path) in discussion_markdown(ctx)
    path.write_text("# Title\n## Seen\nRT-1 hovers.\n```bash\n# a shell comment\n```\n### Objects\n")
    text = discussion_markdown(ctx)
    assert "Title" not in text and text.startswith("### Seen\n") and "#### Objects\n" in text
    assert "\n# a shell comment\n" in text
    ctx.profile.discussion = None
    assert discussion_markdown(ctx) == "The profile names no discussion file.\n"


def test_profile_device_and_options_reach_training(tmp_path):
    import dataclasses

    from vlabench.pipeline import stages

    profile = load_profile(PROFILE)
    rt1 = profile.model("rt1")
    ctx = stages.Context(profile, tmp_path)
    spec = stages._train_spec(ctx, rt1)
    assert spec["train"]["device"] == profile.device == "cpu"
    assert spec["train"]["inference"] == list(rt1.options) == ["decode=mean"]
    own = dataclasses.replace(rt1, train={**rt1.train, "device": "cuda", "inference": ["decode=argmax"]})
    assert stages._train_settings(ctx, own)["device"] == "cuda"
    assert stages._train_settings(ctx, own)["inference"] == ["decode=argmax"]


def test_eval_takes_the_checkpoint_the_rollouts_kept(smoke, tmp_path):
    from vlabench.pipeline import stages

    out = tmp_path / "copy"
    shutil.copytree(smoke, out, symlinks=True)
    ctx = stages.Context(load_profile(PROFILE), out)
    run_dir = out / "train" / "rt1"
    assert stages._policy_spec(ctx, "rt1") == str(run_dir)
    shutil.copytree(run_dir / "latest", run_dir / "best")
    assert stages._policy_spec(ctx, "rt1") == str(run_dir / "best")
    assert stages._policy_spec(ctx, "random") == "random"


@pytest.mark.parametrize("path", sorted(Path("policies/profiles").glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_profile_loads_and_its_recipes_take_its_overrides(path):
    from vlabench.train.config import load_recipe

    profile = load_profile(path)
    assert profile.models and profile.eval_suite
    for m in profile.models:
        model = {**m.model, **{f: "unused" for f in m.uses}}
        load_recipe(m.recipe, model, m.train)  # raises on a key the recipe's model or train config lacks
