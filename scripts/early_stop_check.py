"""Could a row stop generating once its verdict is settled? A check on stored completions.

An early stop would end a row as soon as its text so far is a clear refusal, for example after its
first sentence. It is only allowed if, on stored completions, stopping there never changes a verdict:
neither the behaviour verdict nor the harm-view flag. This script measures that without generating
anything. For each stored completion with at least ``--sentences`` + 1 sentences, it cuts the text
after its first ``--sentences`` sentences. If the judge calls that prefix a refusal, the row would
have stopped there. It then compares the prefix's judgment with the stored judgment of the whole
completion, and counts the characters the stop would have saved.

    python scripts/early_stop_check.py results/experiment/eval/*/seed* --sentences 1
    python scripts/early_stop_check.py results/experiment/eval/*/seed* --sentences 2

Each argument is an eval run folder or bundle with ``completions.jsonl(.gz)`` and
``judgments.jsonl(.gz)``. The prefixes are judged by the judge the stored judgments name (``--judge``
overrides it); the stored judgments must come from the same rules, or the comparison mixes two judges.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

from mosr.bundles import open_run
from mosr.evaluation import judged_request
from mosr.judges import get_judge
from mosr.runs import RunDir

_SENTENCE_END = re.compile(r"[.!?](\s|$)")


def _read_run(run: Path) -> tuple[list[dict], list[dict]]:
    """(completions, judgments) of an eval run folder, or of a bundle (verified and unpacked by mosr)."""
    with open_run(run) as folder:
        records = RunDir(folder, create=False)
        for name in ("completions.jsonl", "judgments.jsonl"):
            if not (folder / name).is_file():
                raise SystemExit(f"error: {run} has no {name}")
        return records.read_jsonl("completions.jsonl"), records.read_jsonl("judgments.jsonl")


def prefix_after(text: str, sentences: int) -> str | None:
    """The text up to the end of its ``sentences``-th sentence, or None when nothing would follow it."""
    ends = list(_SENTENCE_END.finditer(text))
    if len(ends) < sentences:
        return None
    prefix = text[: ends[sentences - 1].end()].rstrip()
    return prefix if prefix != text.rstrip() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="eval run folders or bundles")
    ap.add_argument("--sentences", type=int, default=1, help="stop after this many sentences if they are a refusal")
    ap.add_argument("--judge", default=None, help="judge for the prefixes (default: the one named in the stored judgments)")
    ap.add_argument("--examples", type=int, default=5, help="print this many changed verdicts")
    args = ap.parse_args(argv)
    if args.sentences < 1:
        ap.error("--sentences must be at least 1")

    rows: list[tuple[str, dict, dict]] = []
    for run in args.runs:
        completions, judgments = _read_run(run)
        judged = {j["key"]: j for j in judgments}
        for c in completions:
            if c["key"] not in judged:
                raise SystemExit(f"error: {run}: completion {c['key']} has no stored judgment")
            rows.append((str(run), c, judged[c["key"]]))
    names = {j["judge"] for _, _, j in rows}
    if args.judge is None and len(names) != 1:
        raise SystemExit(f"error: the stored judgments name several judges ({', '.join(sorted(names))}); pass --judge")
    judge = get_judge(args.judge or names.pop())
    print(f"{len(rows)} stored completions from {len(args.runs)} runs; prefix judge: {judge.name}", file=sys.stderr)

    # Only prefixes whose behaviour verdict is a refusal would stop. A judge with a separate behaviour
    # judge (`harm`) reads those first, and its harm view only for the prefixes that would stop.
    def judged_by(j, cut):
        return j.judge([judged_request(c) for _, c, _, _ in cut], [p for *_, p in cut])  # what `mosr eval` gives the judge

    cut = [(r, c, j, p) for r, c, j in rows if (p := prefix_after(c["completion"], args.sentences)) is not None]
    first = getattr(judge, "behaviour", judge)
    verdicts = judged_by(first, cut)
    keep = [i for i, v in enumerate(verdicts) if v.verdict == "refusal"]
    cut = [cut[i] for i in keep]
    verdicts = [verdicts[i] for i in keep] if first is judge else judged_by(judge, cut)  # the harm view: stopping rows only
    stopped = [(*x, v) for x, v in zip(cut, verdicts) if v.verdict == "refusal"]

    per_run: dict[str, Counter] = {}
    changed = []
    for run, c, j, prefix, v in stopped:
        n = per_run.setdefault(run, Counter())
        n["stopped"] += 1
        n["saved_chars"] += len(c["completion"]) - len(prefix)
        if v.verdict != j["verdict"] or bool(v.harmful) != bool(j.get("harmful")):
            n["changed"] += 1
            changed.append((run, j["verdict"], j.get("harmful"), v.harmful, c["completion"]))
    total_chars: Counter = Counter()
    totals: Counter = Counter()
    for run, c, _ in rows:
        total_chars[run] += len(c["completion"])
        totals[run] += 1

    print(f"| run | completions | would stop | verdicts changed | characters saved |")
    print("|---|---|---|---|---|")
    for run in totals:
        n = per_run.get(run, Counter())
        share = n["saved_chars"] / max(total_chars[run], 1)
        print(f"| {run} | {totals[run]} | {n['stopped']} | {n['changed']} | {100 * share:.1f}% |")
    all_saved = sum(n["saved_chars"] for n in per_run.values()) / max(sum(total_chars.values()), 1)
    print(f"| all | {len(rows)} | {len(stopped)} | {len(changed)} | {100 * all_saved:.1f}% |")
    for run, full, harm_full, harm_prefix, text in changed[: args.examples]:
        print(f"\nchanged ({run}): whole text {full} (harmful={harm_full}), prefix refusal (harmful={harm_prefix}):\n  {text[:300]!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
