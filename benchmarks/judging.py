"""Wall time of judging N completions with each judge (target: the default judge under 60 s for 1,000).

    python benchmarks/judging.py [--n 1000] [--judge default --judge keyword ...]

Completions: the labelled judge set of the default model's own outputs (results/judge_set), then
XSTest completions of larger models until N are reached, each with its request. Each judge is built
fresh in the timed region, so the time includes loading the embedding model where a judge needs it
(first use in the process). Prints one table row per judge with the machine's load average.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import time
from pathlib import Path

from mosr.data import DATA_DIR
from mosr.judges import get_judge

ROOT = Path(__file__).resolve().parent.parent


def completions(n: int) -> tuple[list[str], list[str]]:
    reqs, comps = [], []
    set_file = ROOT / "results" / "judge_set" / "completions.jsonl"
    if set_file.is_file():
        for line in set_file.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            reqs.append(r["request"])
            comps.append(r["completion"])
    for path in sorted((DATA_DIR / "xstest").glob("xstest_v2_completions_*_gpteval.csv")):
        with open(path, newline="", encoding="utf-8") as fh:
            for r in csv.DictReader(fh):
                reqs.append(r["prompt"])
                comps.append(r["completion"])
    if len(comps) < n:
        raise SystemExit(f"only {len(comps)} completions available, {n} asked for")
    return reqs[:n], comps[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--judge", action="append", help="judge name (repeatable; default: default, keyword, learned, harm)")
    args = ap.parse_args()
    reqs, comps = completions(args.n)
    names = args.judge or ["default", "keyword", "learned", "harm"]
    chars = sum(len(c) for c in comps) / len(comps)
    print(f"# judging benchmark, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, {os.cpu_count()} cores, "
          f"n={args.n} completions (mean {chars:.0f} characters)")
    print("| judge | seconds | completions/s | load average (1 min) before |")
    print("|---|---|---|---|")
    for name in names:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        judge = get_judge(name)
        out = judge.judge(reqs, comps)
        secs = time.perf_counter() - t0
        assert len(out) == len(comps)
        print(f"| {name} ({judge.name}) | {secs:.1f} | {len(comps) / secs:.0f} | {load:.2f} |")


if __name__ == "__main__":
    main()
