"""``mosr compare [METHOD=]RUN ... --out DIR``: one report over several ``mosr eval`` runs (see :mod:`mosr.comparison`).

Runs evaluated separately (different adapters, limits or seeds) are compared on the prompts they all
share, so every row of the report is measured on the same prompts. Giving the same METHOD to several
runs pools them as seeds of one method.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from mosr.comparison import parse_entries, write_comparison


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="one report (table, Pareto plot, ablations) over several `mosr eval` runs, on their shared prompts",
                       description="Write one HTML/markdown report over several `mosr eval` run folders (or their result bundles, "
                                   "`mosr bundle`). Only the prompts that every "
                                   "run judged are counted, so the rows are comparable; the judges of all runs must agree "
                                   "(re-judge with `mosr judge RUN --judge J` first if they do not).")
    p.add_argument("runs", nargs="+", metavar="[METHOD=]RUN",
                   help="eval run folders or bundles; METHOD= names the row (mosr, rr, refusal-sft, ... get their description); "
                        "the same METHOD for several runs pools them as seeds")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--title", default=None, help="report title")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    entries = parse_entries(args.runs)
    command = shlex.join(["mosr", "compare", *args.runs, "--out", str(args.out)] + (["--title", args.title] if args.title else []))
    result = write_comparison(entries, args.out, title=args.title, command=command)
    print(f"{result.n_shared} prompts judged by every run")
    print(f"report: {result.report_html}")
    print(f"        {Path(args.out) / 'report.md'} (markdown)")
    return 0
