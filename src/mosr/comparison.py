"""Compare several ``mosr eval`` runs on the prompts they all judged.

Runs evaluated separately (different adapters, limits or seeds) are compared on the prompts they all
share, so every row of the report is measured on the same prompts. Giving the same label to several
runs pools them as seeds of one method. A result bundle (:mod:`mosr.bundles`) of an eval run can stand
wherever a run folder can: it is verified and read like the run it came from.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mosr.bundles import is_bundle, open_run, read_bundle_info
from mosr.errors import DataError
from mosr.evaluation import compute_metrics
from mosr.records import JudgmentRecord, PerplexityRecord, read_judgments, read_perplexity, read_run_meta
from mosr.report import write_report
from mosr.runs import RunDir, disk_errors

log = logging.getLogger(__name__)


def parse_entry(text: str) -> tuple[str, Path]:
    label, eq, path = text.partition("=")
    if not eq:
        path, label = text, Path(text).name
    if not label or not path:
        raise DataError(f"expected RUN or METHOD=RUN, got {text!r}")
    return label, Path(path)


def parse_entries(texts: Sequence[str]) -> list[tuple[str, Path]]:
    """Parse every RUN argument; runs named by folder alone whose folder names collide are named by their whole path."""
    entries = [parse_entry(t) for t in texts]
    named = [("=" in t) for t in texts]
    counts: dict[str, int] = {}
    for label, _ in entries:
        counts[label] = counts.get(label, 0) + 1
    return [(str(path) if not explicit and counts[label] > 1 else label, path)
            for (label, path), explicit in zip(entries, named)]


def _judgments(run: Path) -> list[JudgmentRecord]:
    return read_judgments(run, need=("key", "suite", "dataset", "attack", "verdict", "judge"),
                          hint="each RUN must be a folder written by `mosr eval`")


def judge_rules(run: Path) -> str:
    """The judges' rules version an eval run was judged with (``metrics.json``), or ``unknown`` (runs from before it was recorded)."""
    try:
        return str(json.loads((run / "metrics.json").read_text(encoding="utf-8")).get("judge_rules") or "unknown")
    except (OSError, ValueError, AttributeError):
        return "unknown"


def _perplexity(run: Path) -> dict[str, PerplexityRecord]:
    return {r.sample_id: r for r in read_perplexity(run)}


def shared_records(entries: Sequence[tuple[str, Path]]) -> tuple[list[dict[str, Any]], int]:
    """One report record per run (run folder or bundle), with metrics recomputed on the prompts every run judged."""
    if len(entries) < 2:
        raise DataError("give at least two eval runs to compare")
    for _, run in entries:
        if is_bundle(run) and (kind := read_bundle_info(run)["kind"]) != "eval":
            raise DataError(f"{run} is the bundle of a `mosr {kind}` run; compare eval runs or their bundles")
    with contextlib.ExitStack() as stack:
        folders = {run: stack.enter_context(open_run(run)) for _, run in entries}  # a bundle: unpacked, verified
        return _shared_records(entries, folders)


def _shared_records(entries: Sequence[tuple[str, Path]], folders: dict[Path, Path]) -> tuple[list[dict[str, Any]], int]:
    seen: dict[tuple[str, int], Path] = {}
    for label, run in entries:
        seed = read_run_meta(folders[run]).seed
        if (label, seed) in seen:
            raise DataError(f"{label}={seen[(label, seed)]} and {label}={run} both have seed {seed}: runs pooled under one METHOD "
                            "must be different seeds; give them different METHOD= names to compare them")
        seen[(label, seed)] = run
    judged = {run: _judgments(folders[run]) for _, run in entries}
    judges = {run: sorted({j.judge for j in rows}) for run, rows in judged.items()}
    if len({tuple(v) for v in judges.values()}) > 1:
        listing = "; ".join(f"{run}: {', '.join(v)}" for run, v in judges.items())
        raise DataError(f"the runs were judged by different judges ({listing}); re-judge them with `mosr judge RUN --judge J`")
    rules = {run: judge_rules(folders[run]) for _, run in entries}
    if len(set(rules.values())) > 1:  # same judge, other rules: verdicts of some edge cases may differ
        listing = "; ".join(f"{run}: {r}" for run, r in rules.items())
        log.warning("the runs were judged with different versions of the judges' rules (%s); for verdicts made by one "
                    "version, re-judge the runs with `mosr judge RUN --judge %s`", listing, judges[entries[0][1]][0])
    keys = set.intersection(*({j.key for j in rows} for rows in judged.values()))
    if not keys:
        raise DataError("the runs share no judged prompt; compare runs of the same suites and sets")
    ppl = {run: _perplexity(folders[run]) for _, run in entries}
    ppl_ids = set.intersection(*(set(p) for p in ppl.values()))
    records = []
    for label, run in entries:
        rows = [j for j in judged[run] if j.key in keys]
        metrics = compute_metrics(rows, [ppl[run][i].to_dict() for i in sorted(ppl_ids)] or None)
        meta = read_run_meta(folders[run])
        seed, model = meta.seed, meta.model_spec
        metrics["judge"], metrics["model"], metrics["judge_rules"] = judges[run][0], model, rules[run]
        records.append({"label": label, "method": label, "seed": seed, "eval_metrics": metrics, "run": str(run)})
    return records, len(keys)


@dataclass(frozen=True)
class Comparison:
    """What :func:`write_comparison` wrote: the report files and the number of shared prompts."""

    report_html: Path
    report_md: Path
    n_shared: int
    records: list[dict[str, Any]]


def write_comparison(entries: Sequence[tuple[str, Path]], out: str | Path, *, title: str | None = None,
                     command: str | None = None) -> Comparison:
    """One report over the eval runs of ``entries`` (``(label, run folder)`` pairs), written into ``out``."""
    records, n = shared_records(entries)
    folder = RunDir(out).path  # a clear error now if the folder cannot be written
    title = title or f"mosr compare: {len(entries)} eval runs on their {n} shared prompts"
    with disk_errors(folder):
        html = write_report(records, folder, title=title, command=command,
                            sources="completions and judgments are in the eval run folders (or bundles) named in the command")
    return Comparison(report_html=Path(html), report_md=folder / "report.md", n_shared=n, records=records)
