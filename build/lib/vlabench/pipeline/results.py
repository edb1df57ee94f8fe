"""The pipeline's report and publish stages.

``report`` writes ``OUT/report/``: REPORT.md with its CSVs and bar charts (``vlabench report`` over
every evaluated policy: headline, per-task tables, all paired McNemar tests) and RESULTS.md, the
pipeline's own page: the headline table, the paired comparisons the benchmark asks for (each learned
policy vs random, and the profile's ``comparisons``), the language probe per learned model, the
profile's hand-written ``discussion`` file, the budgets and wall times of every stage, and the commands
that reproduce it.

``publish`` copies everything but data and checkpoints into the profile's ``publish`` folder
(e.g. results/lite/), ready to commit.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlabench.fileio import write_bytes_atomic, write_text_atomic
from vlabench.pipeline.stages import Context
from vlabench.pipeline.state import Stage, all_stages, file_hash, value_hash

PROBE_METRIC = "loss"


def _evaluated(ctx: Context) -> list[tuple[str, Path]]:
    return [(n, ctx.eval_dir(n)) for n in ctx.profile.policies if (ctx.eval_dir(n) / "results.json").is_file()]


def report(ctx: Context) -> Path | None:
    from vlabench.report.report import ReportConfig, assign_names, load_run
    from vlabench.report.report import run as run_report

    runs = _evaluated(ctx)
    if not runs:
        ctx.log("report: no evaluated policy yet; run the eval stage first")
        return None
    out = ctx.out / "report"
    files = [d / "results.json" for _, d in runs] + sorted((ctx.out / "probe").glob("*.json"))
    if ctx.profile.discussion and Path(ctx.profile.discussion).is_file():
        files.append(Path(ctx.profile.discussion))
    st = Stage(ctx.out, "report")
    with st.running({"files": value_hash({str(f): file_hash(f) for f in files})}) as run:
        run_report(ReportConfig(runs=[d for _, d in runs], out=out / "REPORT.md"))
        loaded = [load_run(d) for _, d in runs]
        for r, (name, _) in zip(loaded, runs):
            r.name = name
        assign_names(loaded)
        text = results_markdown(ctx, loaded)
        write_text_atomic(out / "RESULTS.md", text)
        run["outputs"] = {"results_md": str(out / "RESULTS.md"), "policies": [n for n, _ in runs]}
        run["status"] = "done"
    ctx.log(f"report: {out / 'RESULTS.md'} and {out / 'REPORT.md'}")
    return out / "RESULTS.md"


def results_markdown(ctx: Context, runs: list) -> str:
    from vlabench.report import tables

    p = ctx.profile
    first = runs[0].results
    parts = [f"# {p.name}: results\n", f"{p.description}\n" if p.description else "",
             f"Profile `{p.path}`; eval suite `{p.eval_suite}` (manifest `{first['suite']['manifest_hash'][:12]}`, "
             f"{first['suite']['n_episodes']} episodes); device {first.get('device')}; renderer {first.get('renderer')}; "
             f"code {first.get('git_sha')}.\n",
             "Success = the task predicate held at any step. Each cell: success rate, Wilson 95% interval (%), n.\n",
             "## Headline\n", tables.headline_markdown([(r.name, r.summary) for r in runs]),
             "## Paired comparisons (exact McNemar, unadjusted)\n", _comparisons(ctx, runs),
             "## Language probe\n", probe_markdown(ctx),
             "## Per-task tables, plots and all pairwise tests\n", "See [REPORT.md](REPORT.md).\n",
             "## What generalizes and what does not\n", discussion_markdown(ctx),
             "## Budgets and wall time\n", budgets_markdown(ctx),
             "## Commands\n", commands_markdown(ctx)]
    return "\n".join(x for x in parts if x)


def _comparisons(ctx: Context, runs: list) -> str:
    from vlabench.report.compare import RunEpisodes, compare_pair, comparisons_markdown

    by_name = {r.name: RunEpisodes(r.name, r.results["suite"]["manifest_hash"], r.episodes) for r in runs}
    pairs = [tuple(c) for c in ctx.profile.comparisons]
    if "random" in by_name:
        pairs += [(m.name, "random") for m in ctx.profile.models]
    rows = [c for a, b in pairs if a in by_name and b in by_name for c in compare_pair(by_name[a], by_name[b])]
    return comparisons_markdown(rows) if rows else "No pair of the profile's comparisons has been evaluated yet.\n"


def probe_markdown(ctx: Context) -> str:
    """Per model and cell: the held-out loss with the episode's own instruction, with another episode's
    instruction from the same cell, and the difference (positive = the model uses the instruction)."""
    rows = []
    for m in ctx.profile.models:
        own_f, swap_f = ctx.probe_file(m.name, False), ctx.probe_file(m.name, True)
        if not (own_f.is_file() and swap_f.is_file()):
            continue
        own, swap = json.loads(own_f.read_text())["cells"], json.loads(swap_f.read_text())["cells"]
        for cell in sorted(own):
            a, b = own[cell].get(PROBE_METRIC), swap.get(cell, {}).get(PROBE_METRIC)
            if a is None or b is None:
                continue
            rows.append(f"| {m.name} | {cell} | {own[cell]['n_episodes']} | {a:.4f} | {b:.4f} | {b - a:+.4f} |")
    if not rows:
        return "Not run yet (the probe stage needs trained models and the probe demos).\n"
    head = ("Teacher-forced training loss (`loss` of each model's own objective, so compare within a model) on "
            "held-out expert demos, with the episode's own instruction and with another episode's instruction "
            "from the same cell (`vlabench offline-eval --swap-instructions`).\n\n"
            "| model | cell | episodes | own instruction | swapped | swapped - own |\n|---|---|---:|---:|---:|---:|")
    return head + "\n" + "\n".join(rows) + "\n"


def discussion_markdown(ctx: Context) -> str:
    """The profile's discussion file under RESULTS.md's own heading: its title (a first ``# `` line) is
    dropped and its other headings pushed one level down, so they nest under that section."""
    path = ctx.profile.discussion
    if not path:
        return "The profile names no discussion file.\n"
    if not Path(path).is_file():
        return f"Not written yet (the profile names `{path}`).\n"
    lines, fenced = [], False
    text = Path(path).read_text().splitlines()
    if text and text[0].startswith("# "):
        text = text[1:]
    for line in text:
        fenced ^= line.startswith("```")
        lines.append("#" + line if line.startswith("#") and not fenced else line)
    return "\n".join(lines) + "\n"


def budgets_markdown(ctx: Context) -> str:
    rows = []
    for rec in all_stages(ctx.out):
        label = rec["stage"] + (f":{rec['item']}" if rec.get("item") else "")
        budget = ", ".join(f"{k}={v}" for k, v in rec.get("budget", {}).items() if v not in ({}, [], None, ""))
        out = rec.get("outputs", {})
        detail = ", ".join(f"{k}={out[k]}" for k in ("steps", "target_steps", "n_episodes", "n", "rate") if k in out)
        rows.append(f"| {label} | {rec['status']} | {rec.get('wall_s', 0) / 60:.1f} | {len(rec.get('invocations', []))} "
                    f"| {budget.replace('|', '/')} | {detail} |")
    return ("| stage | status | wall (min) | invocations | budget | outputs |\n|---|---|---:|---:|---|---|\n"
            + "\n".join(rows) + "\n")


def commands_markdown(ctx: Context) -> str:
    p, out = ctx.profile, ctx.out
    return (f"Everything above: `vlabench pipeline --profile {p.path} --out {out}` (each stage resumes and skips "
            "what is done). One stage or one item at a time, e.g. for a short machine window: "
            f"`vlabench pipeline --profile {p.path} --out {out} --stages train --models rt1`. Stages: collect, vqa, "
            "train, eval, probe, report, publish, pack.\n")


def publish(ctx: Context) -> Path | None:
    """Copy the results (no data, no checkpoints) into the profile's ``publish`` folder."""
    dest = ctx.profile.publish
    if not dest:
        ctx.log("publish: the profile names no publish folder; nothing to do")
        return None
    dest = Path(dest)
    copies: list[tuple[Path, Path]] = [(ctx.profile.path, dest / "profile.toml")]
    for f in sorted((ctx.out / "report").glob("*")):
        copies.append((f, dest / f.name))
    for name, d in _evaluated(ctx):
        copies += [(d / "results.json", dest / "runs" / name / "results.json"),
                   (d / "episodes.jsonl", dest / "runs" / name / "episodes.jsonl")]
    for f in sorted((ctx.out / "probe").glob("*.json")) + sorted((ctx.out / "stages").glob("*.json")):
        copies.append((f, dest / f.parent.name / f.name))
    for m in ctx.profile.models:
        if (ctx.train_dir(m.name) / "metrics.csv").is_file():
            copies.append((ctx.train_dir(m.name) / "metrics.csv", dest / "train" / f"{m.name}_metrics.csv"))
    for src, dst in copies:
        write_bytes_atomic(dst, src.read_bytes())
    ctx.log(f"publish: {len(copies)} files -> {dest}")
    return dest
