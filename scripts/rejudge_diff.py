#!/usr/bin/env python3
"""What a change of the judges' rules did to an experiment: verdicts, harm flags and headline rates.

Compares two copies of an experiment's eval bundles (or run folders), matched by their path below
each root (``eval/<method>/seed<k>``), key by key, and two report summaries (``summary.json``):

    git archive OLD_COMMIT results/experiment/eval results/experiment-report-2026-12-06 | tar -x -C /tmp/old
    python scripts/rejudge_diff.py --old /tmp/old/results/experiment --new results/experiment \\
        --old-summary /tmp/old/results/experiment-report-2026-12-06/summary.json \\
        --new-summary runs/experiment/report/summary.json

Prints one row per method: the verdicts and harm flags that changed (over every seed), each
headline rate's mean over seeds (old → new where it moved by 0.05 points or more), then the most
common verdict changes.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from mosr.bundles import open_run
from mosr.runs import RunDir


def read_judged(folder: Path) -> tuple[dict[str, dict], dict]:
    """An eval bundle's (or run folder's) judgments by key and its metrics, from one unpacking."""
    with open_run(folder) as run:
        judgments = {j["key"]: j for j in RunDir(run, create=False).read_jsonl("judgments.jsonl")}
        metrics = json.loads((Path(run) / "metrics.json").read_text(encoding="utf-8"))
    return judgments, metrics


def _harm_rates(metrics: dict) -> dict[str, float]:
    """The harm view of one eval run: the share of harmful prompts with harmful content, per attack."""
    harm = metrics["suites"]["safety"].get("harm") or {}
    return {attack: h["harmful"]["rate"] for attack, h in (harm.get("by_attack") or {}).items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", type=Path, required=True, help="the old experiment bundles (with eval/<method>/seed<k>)")
    ap.add_argument("--new", type=Path, required=True)
    ap.add_argument("--old-summary", type=Path, required=True)
    ap.add_argument("--new-summary", type=Path, required=True)
    args = ap.parse_args()
    verdicts: Counter[str] = Counter()
    flags: Counter[str] = Counter()
    harm: dict[tuple[str, str], dict[str, list[float]]] = {}
    moves: Counter[tuple[str, str, str]] = Counter()
    for old_dir in sorted((args.old / "eval").glob("*/seed*")):
        rel = old_dir.relative_to(args.old)
        (old, old_metrics), (new, new_metrics) = read_judged(old_dir), read_judged(args.new / rel)
        if old.keys() != new.keys():
            raise SystemExit(f"{rel}: the two runs judged different completions")
        method = rel.parts[1]
        for side, metrics in (("old", old_metrics), ("new", new_metrics)):
            for attack, rate in _harm_rates(metrics).items():
                harm.setdefault((method, side), {}).setdefault(attack, []).append(rate)
        for key, o in old.items():
            n = new[key]
            if o["verdict"] != n["verdict"]:
                verdicts[method] += 1
                moves[o["verdict"], n["verdict"], str(o.get("attack"))] += 1
            if o.get("harmful") != n.get("harmful"):
                flags[method] += 1
    rows = {s: {r["label"]: r for r in json.loads(p.read_text(encoding="utf-8"))["rows"]}
            for s, p in (("old", args.old_summary), ("new", args.new_summary))}
    rates = sorted({k for r in rows["old"].values() for k in r["rates"]})
    print("| method | verdicts changed | harm flags changed | " + " | ".join(rates) + " |")
    print("|---|---|---|" + "---|" * len(rates))
    for label in sorted(rows["old"]):
        old_r, new_r = rows["old"][label]["rates"], rows["new"][label]["rates"]
        cells = []
        for k in rates:
            a, b = 100 * old_r[k]["mean"], 100 * new_r[k]["mean"]
            cells.append(f"{a:.1f}" if abs(a - b) < 0.05 else f"{a:.1f} → {b:.1f}")
        method = rows["old"][label]["method"]
        print(f"| {label} | {verdicts[method]} | {flags[method]} | " + " | ".join(cells) + " |")
    attacks = sorted({a for per in harm.values() for a in per})
    if attacks:
        print("\nHarm view (harmful content on harmful prompts, mean over seeds, %), old → new where it moved:\n")
        print("| method | " + " | ".join(f"harm:{a}" for a in attacks) + " |")
        print("|---|" + "---|" * len(attacks))
        for method in sorted({m for m, _ in harm}):
            cells = []
            for a in attacks:
                o, n = harm.get((method, "old"), {}).get(a), harm.get((method, "new"), {}).get(a)
                if not o or not n:
                    cells.append("—")
                    continue
                x, y = 100 * sum(o) / len(o), 100 * sum(n) / len(n)
                cells.append(f"{x:.1f}" if abs(x - y) < 0.05 else f"{x:.1f} → {y:.1f}")
            print(f"| {method} | " + " | ".join(cells) + " |")
    print()
    for (a, b, attack), c in moves.most_common():
        print(f"- {a} → {b} under `{attack}`: {c}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
