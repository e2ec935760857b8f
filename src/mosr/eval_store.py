"""The completions of an eval run folder: which stored records a rerun keeps, and the journals of
data-parallel processes.

Under several processes (:mod:`mosr.distributed`) each process but the main one appends its
completions to its own ``completions.rankN.jsonl``. The main process merges them into
``completions.jsonl`` after every process has finished, and also at the start of any later run (with
any number of processes), so an interrupted multi-process run resumes like a one-process one.
"""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any

from mosr.errors import RunError
from mosr.records import COMPLETIONS, RUN_META, write_jsonl
from mosr.runs import RunDir, iter_jsonl, repair_jsonl

if TYPE_CHECKING:
    from mosr.evaluation import TaskPlan

log = logging.getLogger("mosr.evaluation")

RANK_JOURNAL = "completions.rank{}.jsonl"  # what process N > 0 generated; merged into completions.jsonl by the main one


def _wanted(plans: list[TaskPlan], settings: str) -> dict[str, tuple[str, str, str]]:
    return {k: (p.data_hash, h, settings) for p in plans for k, h in zip(p.keys, p.prompt_hashes)}


def prune_completions(run: RunDir, plans: list[TaskPlan], settings: str) -> dict[str, dict[str, Any]]:
    """Keep only the stored completions this request asks for, made from the same data, prompt and settings.

    The file is rewritten (atomically) when anything is dropped, so the folder never mixes runs.
    The journals of other processes (``completions.rankN.jsonl``) are merged in first, then deleted.
    Returns the kept records by key.
    """
    path = run / COMPLETIONS
    repair_jsonl(path)
    journals = sorted(run.path.glob(RANK_JOURNAL.format("*")))
    wanted = _wanted(plans, settings)
    kept: dict[str, dict[str, Any]] = {}
    dropped = 0
    for rec in itertools.chain(iter_jsonl(path), *(iter_jsonl(j) for j in journals)):
        key = rec.get("key")
        if key in wanted and key not in kept and (rec.get("data_hash"), rec.get("prompt_hash"), rec.get("settings_hash")) == wanted[key]:
            kept[key] = rec
        else:
            dropped += 1
    if dropped:
        log.warning("%s: dropped %d stored completions that this request does not ask for or that other data, prompts or "
                    "settings produced; they are generated again where needed", run.path, dropped)
    if dropped or journals:
        _rewrite(run, [kept[k] for k in wanted if k in kept])
    for journal in journals:
        journal.unlink()  # only once their records are in completions.jsonl
    return kept


def _rewrite(run: RunDir, records: list[dict[str, Any]]) -> None:
    write_jsonl(run, COMPLETIONS, records)


def merge_completions(run: RunDir, plans: list[TaskPlan], settings: str, existing: dict[str, dict[str, Any]] | None,
                      by_process: list[int]) -> list[dict[str, Any]]:
    """The requested records in task order (``existing``, or the folder's merged with the processes' journals)."""
    existing = existing if existing is not None else prune_completions(run, plans, settings)
    missing = sum(k not in existing for p in plans for k in p.keys)
    if missing:
        raise RunError(f"{run.path}: {missing} completions are missing after every process finished; rerun the same command to finish")
    out = [existing[k] for p in plans for k in p.keys]
    if [r["key"] for r in run.read_jsonl(COMPLETIONS)] != [r["key"] for r in out]:
        _rewrite(run, out)  # task order, so a resumed run's file is the same as an uninterrupted run's
    if (run / RUN_META).is_file():
        meta = run.read_json(RUN_META)
        meta["generated_by_process"] = by_process  # completions each process made in this invocation
        run.write_json(RUN_META, meta)
    return out
