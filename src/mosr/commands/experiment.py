"""``mosr experiment``: train, evaluate and analyse every method, then write one report."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from mosr.experiment import ExperimentConfig, run_experiment


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment", help="train, evaluate and analyse every method (cached stages), then write an HTML report",
        description="Run the experiment described by CONFIG (YAML; see configs/experiment.yaml and docs/EXPERIMENT.md). "
                    "Every stage is cached in OUT: rerun the same command to resume, or after a config change to redo only "
                    "what the change affects.",
    )
    p.add_argument("config", help="experiment config (YAML)")
    p.add_argument("--out", required=True, help="experiment folder (rerun into the same folder to resume)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED", help="override the config's seeds")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD", help="override the config's methods")
    p.add_argument("--limit", type=int, default=None, help="override eval.limit: first N prompts of each evaluation set")
    p.set_defaults(func=run)


def overrides(args: argparse.Namespace, config: ExperimentConfig) -> dict:
    out: dict = {}
    if args.seeds is not None:
        out["seeds"] = args.seeds
    if args.methods is not None:
        out["methods"] = args.methods
    if args.limit is not None:
        out["eval"] = {**config.eval, "limit": args.limit}
    return out


def run(args: argparse.Namespace) -> int:
    base = ExperimentConfig.load(args.config)
    cfg = ExperimentConfig.load(args.config, overrides(args, base))
    command = " ".join(shlex.quote(a) for a in ["mosr", *sys.argv[1:]]) if Path(sys.argv[0]).name == "mosr" else None
    result = run_experiment(cfg, args.out, command=command)
    print(result.summary())
    return 0
