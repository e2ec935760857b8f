"""``mosr bundle RUN --out DIR``: a run's results without its weights (see :mod:`mosr.bundles`).

``--check BUNDLE`` verifies a bundle against its ``bundle.json``; ``--unpack BUNDLE --out RUN`` turns
it back into a run folder (no weights) for ``mosr judge`` or any other reader of run folders.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mosr.bundles import export_bundle, unpack_bundle, verify_bundle
from mosr.errors import ConfigError, RunError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bundle", help="export a train, eval or analyze run as a compact result bundle (no weights), or check one",
                       description="Write the result bundle of RUN (a `mosr train`, `mosr eval` or `mosr analyze` folder, or an "
                                   "experiment stage folder) into --out: run.json, configs, metrics and summaries as they are, "
                                   "completions, judgments and other JSONL/CSV gzipped, every file listed with its sha256 in "
                                   "bundle.json. Weights, checkpoints and caches are never included. See docs/EXPERIMENT.md.")
    p.add_argument("path", metavar="RUN", help="run folder to export (with --check / --unpack: the bundle)")
    p.add_argument("--out", default=None, help="bundle folder to write (with --unpack: the run folder to write)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="verify the bundle RUN: every file against bundle.json")
    mode.add_argument("--unpack", action="store_true", help="unpack the bundle RUN into the run folder --out (no weights)")
    p.set_defaults(func=run)


def _describe(info: dict) -> str:
    stage = info.get("stage") or {}
    where = f"stage {stage.get('name')} (hash {stage.get('hash')})" if stage else "standalone run"
    size = sum(f["stored_size"] for f in info["files"])
    return f"{info['kind']} bundle, {where}, {len(info['files'])} files, {size / 1024:.1f} KiB"


def run(args: argparse.Namespace) -> int:
    if args.check:
        print(f"ok: {_describe(verify_bundle(args.path))}")
        return 0
    if not args.out:
        raise ConfigError("give --out: the bundle folder to write" + (" (here: the run folder to unpack into)" if args.unpack else ""))
    if args.unpack:
        out = Path(args.out)
        if out.exists() and any(out.iterdir()):
            raise RunError(f"{out} is not empty; unpack into a new folder")
        info = unpack_bundle(args.path, out)
        print(f"unpacked {_describe(info)} into {out}")
        return 0
    out = export_bundle(args.path, args.out)
    print(f"wrote {_describe(verify_bundle(out))} to {out}")
    return 0
