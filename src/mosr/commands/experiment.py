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
                    "what the change affects. With a bundles folder (--bundles or the config key `bundles`), finished stages are "
                    "exported there as result bundles and the bundles found there count as finished stages, so an experiment "
                    "can run in pieces (--only, --shard) and its report be rebuilt from the bundles alone.",
    )
    p.add_argument("config", help="experiment config (YAML)")
    p.add_argument("--out", default=None, help="experiment folder (rerun into the same folder to resume); default runs/<config name>")
    p.add_argument("--seeds", type=int, nargs="+", default=None, metavar="SEED", help="override the config's seeds")
    p.add_argument("--methods", nargs="+", default=None, metavar="METHOD", help="override the config's methods")
    p.add_argument("--limit", type=int, default=None, help="override eval.limit: first N prompts of each evaluation set")
    p.add_argument("--bundles", default=None, metavar="DIR",
                   help="override the config's `bundles`: export finished stages to DIR/<kind>/<method>/seed<k>, and take the "
                        "bundles there whose stage hash matches as finished stages")
    p.add_argument("--no-bundles", action="store_true",
                   help="ignore the config's `bundles` folder (implied by --limit: a cheaper pass does not write the shared bundles)")
    p.add_argument("--only", action="append", default=[], metavar="PATTERN",
                   help="finish only the stages whose name matches PATTERN (glob on e.g. eval/rr/seed0; repeatable), plus "
                        "the stages they read")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="finish only shard I of N (whole train/eval/analyze chains dealt out in config order)")
    p.set_defaults(func=run)


def overrides(args: argparse.Namespace, config: ExperimentConfig) -> dict:
    out: dict = {}
    if args.seeds is not None:
        out["seeds"] = args.seeds
    if args.methods is not None:
        out["methods"] = args.methods
    if args.limit is not None:
        out["eval"] = {**config.eval, "limit": args.limit}
    if args.bundles is not None:
        out["bundles"] = args.bundles
    elif args.no_bundles or (args.limit is not None and config.bundles):
        out["bundles"] = None
    return out


def run(args: argparse.Namespace) -> int:
    base = ExperimentConfig.load(args.config)
    cfg = ExperimentConfig.load(args.config, overrides(args, base))
    command = " ".join(shlex.quote(a) for a in ["mosr", *sys.argv[1:]]) if Path(sys.argv[0]).name == "mosr" else None
    out = args.out if args.out is not None else str(Path("runs") / Path(args.config).stem)
    result = run_experiment(cfg, out, command=command, only=args.only, shard=args.shard)
    print(result.summary())
    return 0
