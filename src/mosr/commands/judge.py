"""``mosr judge RUN --judge J``: re-judge stored completions without generating again."""

from __future__ import annotations

import argparse
import sys

from mosr.evaluation import finish_run, headline
from mosr.runs import RunDir


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("judge", help="re-judge an eval run's completions with another judge")
    p.add_argument("run_dir", metavar="RUN")
    p.add_argument("--judge", default="default")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mosr.bundles import is_bundle
    from mosr.errors import RunError
    from mosr.judges import get_judge

    get_judge(args.judge)
    if is_bundle(args.run_dir):  # a bundle is a record: never rewritten in place
        raise RunError(f"{args.run_dir} is a result bundle, which is kept as exported; unpack it into a run folder "
                       "(`python -c \"from mosr.bundles import unpack_bundle; unpack_bundle('BUNDLE', 'RUN')\"`) and judge "
                       "that, or let `mosr experiment` re-judge its bundled completions")
    run = RunDir(args.run_dir, create=False)
    with run.lock("mosr judge"):
        metrics = finish_run(run, args.judge)
    if "incomplete" in metrics:
        gap = metrics["incomplete"]
        print(f"warning: incomplete: {gap['completions']} of {gap['expected']} completions; the rates cover only those. "
              "Rerun the same `mosr eval` command to finish the run", file=sys.stderr)
    for name, value in headline(metrics).items():
        print(f"{name:24} {value.fmt() if hasattr(value, 'fmt') else f'{value:.2f}'}")
    return 0
