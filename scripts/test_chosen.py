"""Held-out test of one method's chosen point (docs/TRAINING.md, "the selection rule", clause 4).

    python scripts/test_chosen.py --config configs/train-rr.yaml --step 30 --seeds 0 1 2 --out runs/test-chosen/rr \\
        [--set key=value ...] [--reuse 0=runs/frontier/rr/step-030]

For each seed: trains the first ``--step`` steps of the config's schedule (``mosr train --stop-after``),
exports that checkpoint as an adapter (:func:`mosr.training.export_checkpoint`) and evaluates it with
``mosr eval --suite all --limit 100 --judge default``: every test set and attack, 100 prompts each.
``--reuse SEED=ADAPTER`` evaluates an adapter that already is that seed's checkpoint (for example the
validation frontier's, which used the same config and seed) instead of training it again. Every step
resumes: training from its checkpoint, evaluation from its stored completions. Writes
``chosen.json``: the config, step, seeds and each seed's headline rates. ``--summarize-only`` only
rewrites ``chosen.json`` from the seeds' stored metrics (after ``mosr judge`` re-judged them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mosr.training import checkpoint_steps, export_checkpoint


def _mosr(*args: str) -> None:
    cmd = [sys.executable, "-m", "mosr.cli", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--step", type=int, required=True, help="the chosen checkpoint step of the config's schedule")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--set", action="append", default=[], help="training config override key=value")
    ap.add_argument("--reuse", action="append", default=[], metavar="SEED=ADAPTER", help="an existing adapter for that seed")
    ap.add_argument("--summarize-only", action="store_true", help="train and evaluate nothing: rewrite chosen.json from the stored metrics")
    args = ap.parse_args()
    reuse: dict[int, Path] = {}
    for r in args.reuse:
        seed, sep, adapter = r.partition("=")
        if not sep or not seed.strip().isdigit() or not (Path(adapter) / "adapter_model.safetensors").is_file():
            ap.error(f"--reuse {r!r}: expected SEED=ADAPTER_FOLDER with an adapter_model.safetensors in the folder")
        reuse[int(seed)] = Path(adapter)
    sets = [x for kv in args.set for x in ("--set", kv)]
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from frontier_steps import row  # the frontier's headline numbers, with intervals

    rows = []
    for seed in args.seeds:
        base = args.out / f"seed{seed}"
        adapter = reuse.get(seed, base / f"step-{args.step:03d}")
        ev = base / "test"
        if args.summarize_only:
            if not (ev / "metrics.json").is_file():
                ap.error(f"--summarize-only: {ev / 'metrics.json'} is missing; run without it first")
            rows.append({"seed": seed, "adapter": str(adapter), **row(args.step, json.loads((ev / "metrics.json").read_text(encoding="utf-8")))})
            continue
        if seed not in reuse and not (adapter / "adapter_model.safetensors").is_file():
            train_dir = base / "train"
            if args.step not in checkpoint_steps(train_dir):
                _mosr("train", "--config", args.config, "--out", str(train_dir), "--seed", str(seed), "--stop-after", str(args.step),
                      "--set", f"checkpoint_every={args.step}", *sets, *(["--resume"] if (train_dir / "checkpoints").is_dir() else []))
            export_checkpoint(train_dir, args.step, adapter)
        _mosr("eval", "--model", "default", "--adapter", str(adapter), "--suite", "all", "--limit", str(args.limit),
              "--judge", "default", "--out", str(ev))
        rows.append({"seed": seed, "adapter": str(adapter), **row(args.step, json.loads((ev / "metrics.json").read_text(encoding="utf-8")))})
    result = {"config": args.config, "overrides": args.set, "step": args.step, "limit": args.limit, "rows": rows}
    (args.out / "chosen.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    for r in rows:
        print(f"seed {r['seed']}: " + " | ".join(f"{k} {v}" for k, v in r["text"].items()))


if __name__ == "__main__":
    main()
