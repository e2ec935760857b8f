"""Wall time of one evaluation with batches planned set by set and pooled over every set.

    python benchmarks/eval_pooling.py [--limit 50] [--suite all] [--out runs/bench-eval-pooling]

Runs ``mosr eval`` twice in this process on the same prompts, one after the other: set by set at
batch 32 (the default) and ``pool_tasks`` at batch 64. The model is loaded once outside the timed
region; each timed region is one ``run_eval`` (generation, reference perplexity, judging, metrics).
Prints the machine, its load average and fp32 matmul peak, and one row per run: wall time,
completions, how many equal the first run's (key by key) and how many verdicts do.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import time
from pathlib import Path

from _common import machine, matmul_peak_gflops, print_table

from mosr.evaluation import EvalConfig, run_eval
from mosr.models import load_model


def _records(run: Path, name: str, field: str) -> dict[str, str]:
    return {r["key"]: r[field] for r in map(json.loads, (run / name).read_text(encoding="utf-8").splitlines())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default="all")
    ap.add_argument("--limit", type=int, default=50)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-eval-pooling"), help="scratch folder (emptied first)")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    print(f"# {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.2f}; fp32 matmul peak {matmul_peak_gflops():.0f} GFLOP/s")
    loaded = load_model(args.model)
    rows, first = [], None
    for name, pool, batch in (("set by set", False, 32), ("pooled", True, 64)):
        cfg = EvalConfig(model=args.model, suites=[args.suite], limit=args.limit, judge="default", batch_size=batch,
                         pool_tasks=pool)
        run = args.out / name.replace(" ", "-")
        start = time.perf_counter()
        run_eval(cfg, run, loaded=loaded)
        seconds = time.perf_counter() - start
        texts = _records(run, "completions.jsonl", "completion")
        verdicts = _records(run, "judgments.jsonl", "verdict")
        first = first or (texts, verdicts)
        rows.append({"batches": name, "batch size": batch, "completions": len(texts), "seconds": f"{seconds:.1f}",
                     "same completions": f"{sum(first[0].get(k) == t for k, t in texts.items())}/{len(texts)}",
                     "same verdicts": f"{sum(first[1].get(k) == v for k, v in verdicts.items())}/{len(verdicts)}"})
    print(f"# mosr eval --suite {args.suite} --limit {args.limit} --judge default, model {args.model}; n = 1 run each")
    print_table(rows, ["batches", "batch size", "completions", "seconds", "same completions", "same verdicts"])


if __name__ == "__main__":
    main()
