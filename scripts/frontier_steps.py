"""Validation frontier over training steps: one training run, every kept checkpoint evaluated on :val.

    python scripts/frontier_steps.py --config configs/train-mosr.yaml --out runs/frontier/mosr \\
        [--every 10] [--limit 60] [--set key=value ...]

Trains once with a checkpoint every ``--every`` steps (all kept), exports each checkpoint as an
adapter folder (:func:`mosr.training.export_checkpoint`), evaluates it with ``mosr eval --suite
validation --limit N`` (judge ``default``) and writes ``frontier.json`` / ``frontier.md``: step,
safety, over-refusal, capability, gibberish, with 95% intervals. Every step of the run resumes:
training from its last checkpoint, evaluations from their stored completions. A checkpoint at step
k of a T-step run carries the run's schedule (loss coefficients depend on k / T), so the knob is
"how far along this run", not "a k-step run". Test splits are never read.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mosr.training import checkpoint_steps, export_checkpoint


def _mosr(*args: str) -> None:
    cmd = [sys.executable, "-m", "mosr.cli", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def row(step: int, metrics: dict) -> dict:
    """The frontier numbers of one evaluation (behaviour view; shares with Wilson intervals)."""
    from mosr.eval_summary import headline  # the same numbers summary.md prints
    from mosr.metrics import Rate

    s = metrics["suites"]
    rates = {k: v for k, v in headline(metrics).items() if isinstance(v, Rate)}
    rates["gibberish"] = Rate(**s["over-refusal"]["gibberish"])  # share of over-refusal that is gibberish
    out: dict = {"step": step, **{k: {"k": r.k, "n": r.n, "rate": r.rate, "low": r.low, "high": r.high} for k, r in rates.items()}}
    out["text"] = {k: r.fmt() for k, r in rates.items()}
    out["reference_perplexity"] = s["capability"].get("reference_perplexity", {}).get("perplexity")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--limit", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="training config override key=value")
    ap.add_argument("--baseline", action="store_true", help="also evaluate the undefended model (step 0)")
    args = ap.parse_args()
    train_dir = args.out / "train"
    sets = [x for kv in args.set for x in ("--set", kv)]
    t0 = time.perf_counter()
    train_args = ["train", "--config", args.config, "--out", str(train_dir), "--seed", str(args.seed),
                  "--set", f"checkpoint_every={args.every}", "--set", "keep_checkpoints=1000", *sets]
    if not (train_dir / "adapter_model.safetensors").is_file():
        _mosr(*train_args, *(["--resume"] if (train_dir / "checkpoints").is_dir() else []))
    train_s = time.perf_counter() - t0
    rows = []
    points: list[tuple[str, Path | None]] = [("0", None)] if args.baseline else []
    points += [(str(s), args.out / f"step-{s:03d}") for s in checkpoint_steps(train_dir)]
    for name, adapter in points:
        if adapter is not None and not (adapter / "adapter_model.safetensors").is_file():
            export_checkpoint(train_dir, int(name), adapter)
        ev = args.out / f"val-step-{int(name):03d}"
        _mosr("eval", "--model", "default", *(["--adapter", str(adapter)] if adapter else []), "--suite", "validation",
              "--limit", str(args.limit), "--judge", "default", "--out", str(ev))
        rows.append(row(int(name), json.loads((ev / "metrics.json").read_text(encoding="utf-8"))))
    result = {"config": args.config, "overrides": args.set, "seed": args.seed, "every": args.every, "limit": args.limit,
              "train_seconds": round(train_s, 1), "rows": rows}
    (args.out / "frontier.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    lines = [f"# Validation frontier over steps: {args.config} {' '.join(args.set)} (seed {args.seed})", "",
             "| step | safety | over-refusal | of which gibberish | capability | reference ppl |", "|---|---|---|---|---|---|"]
    for r in rows:
        t = r["text"]
        ppl = f"{r['reference_perplexity']:.2f}" if r["reference_perplexity"] else "—"
        lines.append(f"| {r['step']} | {t['safety']} | {t['over_refusal']} | {t['gibberish']} | {t['capability_compliance']} | {ppl} |")
    (args.out / "frontier.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
