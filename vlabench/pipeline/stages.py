"""The pipeline's work stages: collect -> vqa -> train -> eval -> probe. Each item is resumable and
skipped when its stage file says it is done with the same inputs (vlabench.pipeline.state).

Pipeline directory ``OUT``::

    data/train, data/probe     demos (vlabench collect) from the profile's train and probe suites
    vqa/train.npz              co-training VQA data (only when a model has vqa = true)
    train/<model>/             training runs (metrics.csv, latest/), logs in train/<model>.log
    eval/<policy>/             evaluation runs (results.json, episodes.jsonl), models and baselines
    probe/<model>.json, probe/<model>_swapped.json   offline losses on held-out demos, own vs swapped instructions
    stages/*.json              one file per stage item
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vlabench.fileio import write_json_atomic
from vlabench.pipeline.profile import ModelRun, Profile
from vlabench.pipeline.state import Stage, file_hash, now, value_hash

PROGRESS_EVERY_S = 300.0
"""How often the train stage prints each running model's step when they train in parallel."""


@dataclass
class Context:
    profile: Profile
    out: Path
    models: list[str] = field(default_factory=list)
    """Models (and baselines, for eval) this invocation works on; empty = all."""
    log: object = print

    def selected(self, names: list[str]) -> list[str]:
        return [n for n in names if not self.models or n in self.models]

    @property
    def train_data(self) -> Path:
        return self.out / "data" / "train"

    @property
    def probe_data(self) -> Path:
        return self.out / "data" / "probe"

    @property
    def vqa_file(self) -> Path:
        return self.out / "vqa" / "train.npz"

    def train_dir(self, model: str) -> Path:
        return self.out / "train" / model

    def eval_dir(self, policy: str) -> Path:
        return self.out / "eval" / policy

    def probe_file(self, model: str, swapped: bool) -> Path:
        return self.out / "probe" / f"{model}{'_swapped' if swapped else ''}.json"


def data_identity(ctx: Context, item: str) -> str:
    """What a dataset of the pipeline is: the suite and size its collect stage was asked for. (Not the
    shard files' hash: a later window recollects the same seeded demos, packed into other files.)"""
    st = Stage(ctx.out, "collect", item)
    if not st.done:
        raise RuntimeError(f"the {item} demos are not collected yet: run the collect stage first")
    return value_hash(st.record["inputs"])


def collect(ctx: Context) -> None:
    from vlabench.data.collect import CollectConfig
    from vlabench.data.collect import run as run_collect
    from vlabench.suite import load_suite

    p = ctx.profile
    for item, suite, episodes, dest in (("train", p.train_suite, p.collect.episodes, ctx.train_data),
                                        ("probe", p.probe_suite, p.collect.probe_episodes, ctx.probe_data)):
        st = Stage(ctx.out, "collect", item)
        perturb = p.collect.perturb if item == "train" else 0.0  # the probe scores clean demos
        inputs = {"suite": load_suite(suite).manifest_hash, "episodes": str(episodes)}
        if perturb:
            inputs["perturb"] = str(perturb)
        if st.is_current(inputs, str(dest)) and (dest / "manifest.json").is_file():
            ctx.log(f"collect:{item}: done ({st.record['outputs'].get('n_episodes')} demos in {dest})")
            continue
        ctx.log(f"collect:{item}: {suite} -> {dest}")
        with st.running(inputs, {"workers": p.collect.workers, "episodes": episodes, "perturb": perturb}) as run:
            run_collect(CollectConfig(suite=Path(suite), out=dest, workers=p.collect.workers, episodes=episodes,
                                      perturb=perturb))
            from vlabench.data.manifest import load_manifest

            manifest = load_manifest(dest)
            run["outputs"] = {"manifest_hash": manifest["hash"], "n_episodes": manifest["n_episodes"],
                              "n_frames": manifest["n_frames"]}
            run["status"] = "done"


def vqa(ctx: Context) -> None:
    from vlabench.data.vqa import VQAGenConfig
    from vlabench.data.vqa import run as run_vqa
    from vlabench.suite import load_suite

    p = ctx.profile
    if not any(m.vqa for m in p.models if m.name in ctx.selected([m.name for m in p.models])):
        ctx.log("vqa: no selected model co-trains on VQA data; nothing to do")
        return
    st = Stage(ctx.out, "vqa")
    inputs = {"settings": value_hash(vars(p.vqa)), "suite_env": value_hash(load_suite(p.train_suite).env_kwargs)}
    if st.is_current(inputs, str(ctx.vqa_file)) and ctx.vqa_file.is_file():
        ctx.log(f"vqa: done ({ctx.vqa_file})")
        return
    with st.running(inputs, vars(p.vqa)) as run:
        run_vqa(VQAGenConfig(out=str(ctx.vqa_file), tasks=list(p.vqa.tasks), suite=p.train_suite,
                             seed_start=p.vqa.seed_start, n_scenes=p.vqa.n_scenes,
                             questions_per_scene=p.vqa.questions_per_scene))
        run["outputs"] = {"sha256": file_hash(ctx.vqa_file)}
        run["status"] = "done"


def _train_settings(ctx: Context, m: ModelRun) -> dict:
    """The model's train overrides, plus what the profile implies: its ``device`` (unless the model names
    one) and the model's inference ``options`` as the checkpoint's stored inference settings (unless it sets
    ``inference``), so its periodic rollouts, and the checkpoint they keep, run as it is evaluated."""
    train = {"device": ctx.profile.device, **m.train}
    if m.options and "inference" not in train:
        train["inference"] = list(m.options)
    return train


def _finished_run(ctx: Context, name: str) -> Path:
    """What later stages read of a model's training run: the checkpoint its rollouts chose (``best/``, with
    ``train.eval_every``), else its last one."""
    best = ctx.train_dir(name) / "best"
    return best if best.is_dir() else ctx.train_dir(name)


def _train_spec(ctx: Context, m: ModelRun) -> dict:
    model = {**m.model, **{f: str(_finished_run(ctx, dep)) for f, dep in m.uses.items()}}
    if m.vqa:
        model["vqa_data"] = str(ctx.vqa_file)
    return {"recipe": m.recipe, "model": model, "train": _train_settings(ctx, m), "data": str(ctx.train_data),
            "out": str(ctx.train_dir(m.name)), "threads": m.threads}


def _steps_done(run_dir: Path) -> int:
    from vlabench.models.checkpoint import read_trainer_state

    try:
        return int(read_trainer_state(run_dir)["step"])
    except (FileNotFoundError, KeyError, ValueError):
        return 0


def _logged_step(run_dir: Path) -> int:
    """The last step metrics.csv has a row for (0 before the first)."""
    try:
        with open(run_dir / "metrics.csv", "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            last = f.read().decode(errors="replace").strip().splitlines()[-1]
        return int(last.split(",", 1)[0])
    except (OSError, IndexError, ValueError):
        return 0


def _train_inputs(ctx: Context, m: ModelRun, spec: dict) -> dict:
    inputs = {"data": data_identity(ctx, "train"), "recipe": file_hash(m.recipe),
              "overrides": value_hash({"model": m.model, "train": m.train})}
    if spec["train"] != m.train:  # what the profile adds (device, rollout options) is an input too
        inputs["implied"] = value_hash({k: v for k, v in spec["train"].items() if m.train.get(k) != v})
    if m.vqa:
        inputs["vqa"] = file_hash(ctx.vqa_file)
    if m.uses:
        from vlabench.models.checkpoint import checkpoint_hash

        inputs["uses"] = value_hash({f: checkpoint_hash(_finished_run(ctx, dep)) for f, dep in m.uses.items()})
    return inputs


@dataclass
class _Job:
    model: ModelRun
    stage: Stage
    inputs: dict
    steps: int
    proc: subprocess.Popen | None = None
    log: Path | None = None
    t0: float = 0.0
    started: str = ""


def train(ctx: Context) -> None:
    """Train every selected model, ``profile.train_settings.parallel`` at a time, each in its own process
    (vlabench.pipeline.trainjob). A model that ``uses`` others starts once they are done (it is skipped if one
    fails or stops early). A run stopped by its ``max_minutes`` budget is "partial": rerunning the stage
    continues it from its checkpoint."""
    waiting = [m for m in ctx.profile.models if m.name in ctx.selected([m.name])]
    pending: list[_Job] = []
    running: list[_Job] = []
    parallel = max(1, ctx.profile.train_settings.parallel)
    last_note = time.monotonic()
    try:
        while waiting or pending or running:
            unfinished = {m.name for m in waiting} | {j.model.name for j in pending + running}
            for m in [m for m in waiting if not set(m.uses.values()) & unfinished]:
                waiting.remove(m)
                missing = [d for d in m.uses.values() if not Stage(ctx.out, "train", d).done]
                if missing:
                    ctx.log(f"train:{m.name}: skipped, it uses {', '.join(missing)}, whose training is not done")
                    continue
                job = _job(ctx, m)
                if job is not None:
                    pending.append(job)
            while pending and len(running) < parallel:
                job = pending.pop(0)
                _start(ctx, job, quiet=parallel > 1)
                running.append(job)
            if not running:
                continue
            time.sleep(0.5)
            if parallel > 1 and time.monotonic() - last_note > PROGRESS_EVERY_S:
                last_note = time.monotonic()
                ctx.log("train: " + ", ".join(f"{j.model.name} {_logged_step(ctx.train_dir(j.model.name))}/{j.steps}"
                                              for j in running))
            for job in [j for j in running if j.proc.poll() is not None]:
                running.remove(job)
                _finish(ctx, job)
    except KeyboardInterrupt:
        for job in running:
            job.proc.wait()  # the children got the same Ctrl-C: each saves a checkpoint first
            _finish(ctx, job)
        raise


def _job(ctx: Context, m: ModelRun) -> _Job | None:
    """The training job of ``m``, or None when its stage is done with the same inputs."""
    from vlabench.train.config import load_recipe

    st = Stage(ctx.out, "train", m.name)
    spec = _train_spec(ctx, m)
    inputs = _train_inputs(ctx, m, spec)
    if st.is_current(inputs, str(ctx.train_dir(m.name))):
        ctx.log(f"train:{m.name}: done ({_steps_done(ctx.train_dir(m.name))} steps)")
        return None
    steps = load_recipe(m.recipe, spec["model"], spec["train"])[2].steps  # validates the overrides too
    return _Job(m, st, inputs, steps)


def _start(ctx: Context, job: _Job, quiet: bool) -> None:
    m = job.model
    spec_file = ctx.out / "train" / f"{m.name}.spec.json"
    write_json_atomic(spec_file, _train_spec(ctx, m))
    job.log = ctx.out / "train" / f"{m.name}.log"
    ctx.log(f"train:{m.name}: {m.recipe}, budget {m.train or 'as the recipe'}" + (f" (log: {job.log})" if quiet else ""))
    out = open(job.log, "a") if quiet else None
    job.t0, job.started = time.monotonic(), now()
    job.proc = subprocess.Popen([sys.executable, "-m", "vlabench.pipeline.trainjob", str(spec_file)], stdout=out,
                                stderr=subprocess.STDOUT if quiet else None)
    if out is not None:
        out.close()  # the child holds its own copy


def _finish(ctx: Context, job: _Job) -> None:
    m, code = job.model, job.proc.returncode
    done_steps = _steps_done(ctx.train_dir(m.name))
    status = "done" if code == 0 and done_steps >= job.steps else ("partial" if code in (0, 130, -2) else "failed")
    job.stage.record_run(job.inputs, {"recipe": m.recipe, **m.train, "model": m.model, "threads": m.threads}, status,
                         {"steps": done_steps, "target_steps": job.steps, "exit_code": code},
                         time.monotonic() - job.t0, job.started)
    note = {"done": "done", "partial": "stopped before its last step (time budget or Ctrl-C); rerun to continue"}
    ctx.log(f"train:{m.name}: {done_steps}/{job.steps} steps, {job.stage.record['wall_s']:.0f} s in all, "
            + note.get(status, f"FAILED with exit code {code}; see {job.log or 'the output above'}"))


def _policy_spec(ctx: Context, name: str) -> str | None:
    """The eval --policy of a profile entry: a baseline's name, or a model's finished training run."""
    if name in ctx.profile.baselines:
        return name
    if not Stage(ctx.out, "train", name).done:
        return None
    return str(_finished_run(ctx, name))


def evaluate(ctx: Context) -> None:
    """Every selected model whose training is done, then the baselines, on the eval suite's one manifest."""
    from vlabench.eval.harness import EvalConfig
    from vlabench.eval.harness import run as run_eval
    from vlabench.agents.spec import PolicySpec
    from vlabench.suite import load_suite

    p = ctx.profile
    suite = load_suite(p.eval_suite)
    failed = []
    for name in ctx.selected(p.policies):
        spec = _policy_spec(ctx, name)
        if spec is None:
            ctx.log(f"eval:{name}: skipped, its training is not done (run the train stage first)")
            continue
        options = list(p.model(name).options) if name not in p.baselines else []
        desc = PolicySpec.parse(spec, options).describe()
        st = Stage(ctx.out, "eval", name)
        inputs = {"suite": suite.manifest_hash, "policy": desc["checkpoint_hash"] or name,
                  "options": value_hash(options), "max_episodes": str(p.eval.max_episodes)}
        if st.is_current(inputs, str(ctx.eval_dir(name))):
            out = st.record["outputs"]
            ctx.log(f"eval:{name}: done ({out.get('successes')}/{out.get('n')} successes, {out.get('rate', 0):.1%})")
            continue
        cfg = EvalConfig(suite=Path(p.eval_suite), policy=spec, workers=p.eval.workers, device=p.device,
                         out=ctx.eval_dir(name), bf16=p.eval.bf16, max_episodes=p.eval.max_episodes,
                         policy_option=options, envs_per_worker=p.eval.envs_per_worker,
                         max_minutes=p.eval.max_minutes)
        try:
            with st.running(inputs, {"workers": p.eval.workers, "envs_per_worker": p.eval.envs_per_worker,
                                     "max_episodes": p.eval.max_episodes, "max_minutes": p.eval.max_minutes,
                                     "options": options}) as run:
                res = run_eval(cfg)
                wanted = min(p.eval.max_episodes or len(suite.episodes), len(suite.episodes))
                run["outputs"] = {"n": res["overall"]["n"], "successes": res["overall"]["successes"],
                                  "rate": res["overall"]["rate"], "errors": res["overall"]["errors"]}
                run["status"] = "done" if res["overall"]["n"] >= wanted else "partial"
        except RuntimeError as e:  # e.g. every episode errored: the other policies still run
            ctx.log(f"eval:{name}: FAILED: {e}")
            failed.append(name)
    if failed:
        raise RuntimeError(f"evaluation failed for {', '.join(failed)} (see the lines above); the other policies "
                           "are recorded")


def probe(ctx: Context) -> None:
    """Offline losses of every trained model on the held-out demos, with their own and with swapped
    instructions (the language probe: a model that reads the instruction loses more when it is swapped)."""
    from vlabench.eval.offline import OfflineEvalConfig
    from vlabench.eval.offline import run as run_offline
    from vlabench.models.checkpoint import checkpoint_hash

    p = ctx.profile
    for m in p.models:
        if m.name not in ctx.selected([m.name]):
            continue
        if not Stage(ctx.out, "train", m.name).done:
            ctx.log(f"probe:{m.name}: skipped, its training is not done")
            continue
        st = Stage(ctx.out, "probe", m.name)
        inputs = {"checkpoint": checkpoint_hash(ctx.train_dir(m.name)), "data": data_identity(ctx, "probe"),
                  "max_episodes_per_cell": str(p.probe.max_episodes_per_cell)}
        if st.is_current(inputs, str(ctx.probe_file(m.name, False))):
            ctx.log(f"probe:{m.name}: done")
            continue
        with st.running(inputs, vars(p.probe)) as run:
            for swapped in (False, True):
                run_offline(OfflineEvalConfig(checkpoint=str(ctx.train_dir(m.name)), data=str(ctx.probe_data),
                                              max_episodes_per_cell=p.probe.max_episodes_per_cell,
                                              batch_size=p.probe.batch_size, swap_instructions=swapped,
                                              device=p.device, out=str(ctx.probe_file(m.name, swapped))))
            run["outputs"] = {"files": [str(ctx.probe_file(m.name, s)) for s in (False, True)]}
            run["status"] = "done"
