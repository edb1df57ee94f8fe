"""``vlabench compare``: a sequential paired comparison of two policies.

Live, ``vlabench compare A B --suite S`` runs both policies pair by pair until the test decides
(:mod:`vlabench.eval.compare_live`). Offline, ``vlabench compare RUN_A RUN_B`` asks when the test would have
stopped on two finished runs.

The two runs must have evaluated the same suite manifest. Their episodes are paired by (task, split, index,
seed) and taken in round-robin order over the cells (``interleave_by_cell``), the order a live comparison
would run them in; the anytime-valid test of ``vlabench.eval.sequential`` is applied after every pair.
The record (``--out FILE.json``) holds the decision, the pairs used, the discordant counts, the e-value and
the fixed-n McNemar p-value on all pairs for reference.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tyro.conf import Positional

from vlabench.eval.metrics import discordant_counts, mcnemar_exact, paired_outcomes
from vlabench.eval.sequential import interleave_by_cell, sequential_test
from vlabench.report.compare import RunEpisodes, check_same_suite
from vlabench.report.report import load_run


@dataclass
class CompareConfig:
    """Sequential paired comparison of two policies: live with --suite (A and B are policies), else offline
    on two finished runs (A and B are results directories)."""

    run_a: Positional[str]
    """A: a results directory (offline), or with --suite a policy in any --policy form"""
    run_b: Positional[str]
    """B: likewise; offline, on the same suite manifest as A"""
    suite: Path | None = None
    """live mode: the suite both policies run on, pair by pair, until the test decides"""
    alpha: float = 0.05
    """the test's type-I error bound, at any stopping time"""
    max_pairs: int = 0
    """stop without a decision after this many pairs (0 = all the pairs the runs or the suite have)"""
    block: int = 10
    """live: pairs each policy runs before the test looks again"""
    runs: Path | None = None
    """live: where both evaluations go (RUNS/a, RUNS/b, RUNS/compare.json); default runs/compare/A-vs-B.
    Rerunning the same command resumes"""
    workers: int = 1
    """live: env worker processes of each evaluation"""
    envs_per_worker: int = 1
    """live: env slots per worker"""
    device: str = "cpu"
    """live: torch device of learned policies"""
    out: Path | None = None
    """write the record here too (JSON)"""


def _slug(policy: str) -> str:
    return Path(policy.rstrip("/")).name.replace(":", "_") or "policy"


def compare_offline(cfg: CompareConfig) -> dict:
    a, b = load_run(Path(cfg.run_a)), load_run(Path(cfg.run_b))
    if a.name == b.name:  # two runs of one family (e.g. both "rt2"): name them by their directories
        a.name, b.name = Path(cfg.run_a).name, Path(cfg.run_b).name
    check_same_suite([RunEpisodes(a.name, a.results["suite"]["manifest_hash"], a.episodes),
                      RunEpisodes(b.name, b.results["suite"]["manifest_hash"], b.episodes)])
    pairs = {key: (sa, sb) for key, sa, sb in paired_outcomes(a.episodes, b.episodes)}
    order = interleave_by_cell(list(pairs))
    res = sequential_test((pairs[k] for k in order), alpha=cfg.alpha, max_pairs=cfg.max_pairs)
    wins_a, wins_b = discordant_counts((k, *pairs[k]) for k in order)
    return {"a": a.name, "b": b.name, "a_dir": str(cfg.run_a), "b_dir": str(cfg.run_b), "mode": "offline",
            "test": "beta-binomial mixture martingale on discordant pairs, Beta(1, 1) prior (vlabench.eval.sequential)",
            "suite_manifest_hash": a.results["suite"]["manifest_hash"], "pairs_available": len(order),
            **asdict(res), "summary": res.line(),
            "fixed_n": {"pairs": len(order), "a_only": wins_a, "b_only": wins_b,
                        "mcnemar_p": mcnemar_exact(wins_a, wins_b)}}


def run(cfg: CompareConfig) -> dict:
    from vlabench.fileio import write_json_atomic

    if cfg.suite is not None:
        from vlabench.eval.compare_live import compare_live

        runs = cfg.runs or Path("runs/compare") / f"{_slug(cfg.run_a)}-vs-{_slug(cfg.run_b)}"
        record = compare_live(cfg.run_a, cfg.run_b, cfg.suite, runs, cfg.alpha, cfg.max_pairs, cfg.block,
                              workers=cfg.workers, envs_per_worker=cfg.envs_per_worker, device=cfg.device)
        print(f"{record['a']} vs {record['b']}: {record['summary']}; record: {runs / 'compare.json'}")
        if cfg.out:
            write_json_atomic(cfg.out, record)
        return record
    record = compare_offline(cfg)
    print(f"{record['a']} vs {record['b']}: {record['summary']} ({record['pairs_available']} pairs available; "
          f"fixed-n McNemar on all of them p = {record['fixed_n']['mcnemar_p']:.3g})")
    if cfg.out:
        write_json_atomic(cfg.out, record)
    return record
