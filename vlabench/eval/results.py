"""The results directory of one evaluation run: episodes.jsonl, resume checks, results.json, tallies.

Directory ``out``::

    results.json      summary + provenance, rewritten atomically while running and at the end;
                      ``complete`` says whether every selected manifest episode is done
    episodes.jsonl    one record per finished episode (vlabench.contracts.EpisodeRecord), appended
                      (flush + fsync) the moment it ends
    videos/           optional MP4s (vlabench.eval.video)

Resuming: a rerun into the same ``out`` skips the episodes already in episodes.jsonl (matched by
(task, split, index, seed)); error episodes count as finished unless the rerun asks to retry them
(``retry_errors``: their records move to errors_retried.jsonl and they run again). A directory written
for another suite manifest, policy, checkpoint or env options is refused.

results.json fields: schema_version, vlabench_version, git_sha (of the latest invocation; when a
resume ran under other code, git_shas lists every invocation's, oldest first), created, updated, suite {name, path, kind,
manifest_hash, n_episodes, max_episodes}, policy {name, checkpoint, checkpoint_hash, options},
renderer (actually used) and renderer_from (suite | flag | default), device, torch_version,
pybullet_version, sim_version, env_kwargs, backend, workers, envs_per_worker, train_suite_allowed, complete, and
the summary of vlabench.eval.metrics.summarize (cells, splits, overall, each with a Wilson interval).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlabench.eval.metrics import episode_key, is_success, summarize
from vlabench.eval.paired import twin_summary
from vlabench.fileio import write_json_atomic, write_text_atomic
from vlabench.suite import Suite

SCHEMA_VERSION = 1
RESULTS_NAME, EPISODES_NAME = "results.json", "episodes.jsonl"
RETRIED_NAME = "errors_retried.jsonl"
"""Error records taken out of episodes.jsonl by a retry (kept, appended, as the run's history)."""
RESULTS_EVERY_S = 15.0
"""How often results.json is refreshed while running (it is always rewritten at the end)."""


class ResumeError(ValueError):
    """``out`` holds results that cannot be continued by this run."""


def read_episodes(path: Path) -> list[dict]:
    """Records of episodes.jsonl; a torn last line (killed mid-write) is cut off the file."""
    if not path.is_file():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    out = []
    for i, line in enumerate(data.decode().splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise ResumeError(f"{path}:{i} is not valid JSON ({e}); fix or delete the line") from None
    return out


def load_previous(out: Path, suite: Suite, policy: dict, env_kwargs: dict,
                  retry_errors: bool = False) -> tuple[dict, dict | None]:
    """Finished records by key, and the old results.json; ResumeError if ``out`` belongs to another run.
    ``retry_errors``: error records are moved from episodes.jsonl to errors_retried.jsonl, so they run again."""
    res_path, ep_path = out / RESULTS_NAME, out / EPISODES_NAME
    old = None
    if res_path.is_file():
        try:
            old = json.loads(res_path.read_text())
        except ValueError as e:
            raise ResumeError(f"{res_path} is not valid JSON ({e}); use a new --out") from None
        theirs = (old.get("suite", {}).get("manifest_hash"), old.get("suite", {}).get("path"))
        if theirs[0] != suite.manifest_hash:
            raise ResumeError(f"refusing to resume into {out}: its results come from suite manifest "
                              f"{str(theirs[0])[:12]} ({theirs[1]}), this run's is {suite.manifest_hash[:12]} "
                              f"({suite.path}); use another --out or delete {out}")
        op = old.get("policy", {})
        if (op.get("name"), op.get("checkpoint_hash"), op.get("options", {})) != (
                policy["name"], policy["checkpoint_hash"], policy["options"]):
            raise ResumeError(f"refusing to resume into {out}: its results come from policy {op.get('name')!r} "
                              f"(checkpoint hash {str(op.get('checkpoint_hash'))[:12]}, options {op.get('options', {})}), "
                              f"this run's is {policy['name']!r} (checkpoint hash "
                              f"{str(policy['checkpoint_hash'])[:12]}, options {policy['options']}); "
                              "use another --out")
        if "env_kwargs" in old and old["env_kwargs"] != env_kwargs:
            raise ResumeError(f"refusing to resume into {out}: its episodes ran with env options "
                              f"{old['env_kwargs']}, this run uses {env_kwargs}; use another --out")
    records = read_episodes(ep_path)
    if records and old is None:
        raise ResumeError(f"refusing to resume into {out}: {ep_path} exists without {RESULTS_NAME}, so its "
                          "suite and policy are unknown; use another --out")
    if retry_errors and any(r.get("status") == "error" for r in records):
        retried = [r for r in records if r.get("status") == "error"]
        records = [r for r in records if r.get("status") != "error"]
        with open(out / RETRIED_NAME, "a") as f:
            f.writelines(json.dumps(r) + "\n" for r in retried)
            f.flush()
            os.fsync(f.fileno())
        write_text_atomic(ep_path, "".join(json.dumps(r) + "\n" for r in records))
    keys = {e.key for e in suite.episodes}
    done: dict[tuple, dict] = {}
    for rec in records:
        k = episode_key(rec)
        if k not in keys:
            raise ResumeError(f"refusing to resume into {out}: episode {k} in {ep_path} is not in the manifest "
                              f"of {suite.path}; use another --out")
        done.setdefault(k, rec)
    return done, old


def _union_limit(old: int | None, new: int | None) -> int | None:
    """The episode limit that covers every invocation (None = the whole suite)."""
    return None if old is None or new is None else max(old, new)


@dataclass
class Tally:
    n: int = 0
    successes: int = 0
    errors: int = 0

    def add(self, rec: dict) -> None:
        self.n += 1
        self.successes += is_success(rec)
        self.errors += rec["status"] == "error"

    def __str__(self) -> str:
        return (f"success {self.successes}/{self.n} ({100 * self.successes / max(1, self.n):.0f}%)"
                + (f", errors {self.errors}" if self.errors else ""))


@dataclass
class RunRecord:
    """One evaluation's results directory while it runs: appends episodes, keeps results.json current."""

    out: Path
    suite: Suite
    provenance: dict[str, Any]
    """Fields of results.json that do not depend on the episodes (policy, device, env_kwargs, ...)."""
    done: dict[tuple, dict]
    old: dict | None
    sha: str | None
    """git sha of this invocation; None when it runs no episode (git_sha(s) and updated stay as recorded)."""
    max_episodes: int | None
    shas: list[str] = field(init=False)
    created: str = field(init=False)
    _last_write: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        old = self.old or {}
        self.created = old.get("created") or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        self.shas = list(old.get("git_shas") or ([old["git_sha"]] if old.get("git_sha") else []))
        if self.sha is not None and (not self.shas or self.shas[-1] != self.sha):
            self.shas.append(self.sha)
        if self.old is not None:
            self.max_episodes = _union_limit(old.get("suite", {}).get("max_episodes"), self.max_episodes)

    def results(self) -> dict:
        """results.json of what is recorded so far."""
        from vlabench import __version__

        records = list(self.done.values())
        renderers = sorted({r["renderer"] for r in records if r.get("renderer")})
        s = self.suite
        return {
            "schema_version": SCHEMA_VERSION,
            "vlabench_version": __version__,
            "git_sha": self.shas[-1],
            **({"git_shas": self.shas} if len(self.shas) > 1 else {}),
            "created": self.created,
            "updated": (dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds") if self.sha is not None
                        else (self.old or {}).get("updated", self.created)),
            "suite": {"name": s.name, "path": str(s.path), "kind": s.kind, "manifest_hash": s.manifest_hash,
                      "n_episodes": len(s.episodes), "max_episodes": self.max_episodes},
            **self.provenance,
            "renderer": "+".join(renderers) or (self.old or {}).get("renderer") or self.provenance["renderer_requested"],
            "complete": len(records) == len(s.episodes),
            **summarize(records),
            **({"twins": twin_summary(records)} if any(r.get("twin") for r in records) else {}),
        }

    def write(self) -> dict:
        res = self.results()
        write_json_atomic(self.out / RESULTS_NAME, res)
        self._last_write = time.monotonic()
        return res

    def open_log(self):
        return open(self.out / EPISODES_NAME, "a")

    def append(self, log, rec: dict) -> None:
        """Append one finished episode (fsynced) and refresh results.json every RESULTS_EVERY_S."""
        rec.pop("video", None)
        log.write(json.dumps(rec) + "\n")
        log.flush()
        os.fsync(log.fileno())
        self.done[episode_key(rec)] = rec
        if time.monotonic() - self._last_write > RESULTS_EVERY_S:
            self.write()


def success_table(summary: dict) -> str:
    """Rows = tasks, columns = splits, entries "rate (succ/n)"; then the overall line."""
    cells = {(c["task"], c["split"]): c for c in summary["cells"]}
    tasks = sorted({t for t, _ in cells})
    splits = sorted({s for _, s in cells})

    def fmt(c: dict | None) -> str:
        if c is None:
            return "-"
        err = f" {c['errors']}err" if c["errors"] else ""
        return f"{100 * c['rate']:.0f}% ({c['successes']}/{c['n']}){err}"

    w0 = max([4, *(len(t) for t in tasks)])
    cols = [max(len(s), *(len(fmt(cells.get((t, s)))) for t in tasks)) for s in splits]
    lines = ["  ".join([f"{'task':<{w0}}", *(f"{s:>{w}}" for s, w in zip(splits, cols))])]
    lines += ["  ".join([f"{t:<{w0}}", *(f"{fmt(cells.get((t, s))):>{w}}" for s, w in zip(splits, cols))])
              for t in tasks]
    o = summary["overall"]
    lines.append(f"overall: {fmt(o)}, 95% CI [{o['ci95'][0]:.2f}, {o['ci95'][1]:.2f}]")
    return "\n".join(lines)
