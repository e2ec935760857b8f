"""Time of `mosr steer` (extraction + selection on :val) per method, and what steering adds to generation.

    python benchmarks/steering.py [--model default|tiny] [--methods scans,refusal-direction,alphasteer,ablate]
                                  [--n-train 64] [--val-prompts 24] [--max-new-tokens 32] [--gen-prompts 32]

Each method runs the same code as `mosr steer` (into --out/METHOD), with the budget given. The
generation overhead compares greedy generation of --gen-prompts test prompts with the chosen
artifact against no steering, on the same warm model, best of --repeats alternating runs; every
row decodes exactly --gen-tokens tokens (end-of-turn ignored), since steering changes where
answers end and so how much work a run does.
Targets (issue 16): extraction + selection <= 10 min per method on the default model on 2 CPU
cores, and steering adds <= 10% to generation time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, print_table  # noqa: E402

from mosr.data import load_dataset
from mosr.generation import generate
from mosr.steering import SteerConfig, load_steering, run_steer, steer


def test_prompts(n: int) -> list[str]:
    specs = ("xstest-safe", "or-bench-hard:test", "advbench:test", "self-instruct:test")
    per = -(-n // len(specs))
    return [s.prompt for spec in specs for s in load_dataset(spec, limit=per)][:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model spec, or 'tiny' for a random 4-layer model (smoke run)")
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--methods", default="scans,refusal-direction,alphasteer,ablate",
                        help="comma list; 'ablate' = refusal-direction --mode ablate")
    parser.add_argument("--n-train", type=int, default=64)
    parser.add_argument("--val-prompts", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=72)
    parser.add_argument("--gen-prompts", type=int, default=32)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for the steering runs (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true",
                        help="where --out/METHOD already holds a steering run, load it and time only the generation overhead")
    args = parser.parse_args()
    os.environ.setdefault("MOSR_PROGRESS", "0")
    if args.model == "tiny":
        from mosr.testing import tiny_model

        loaded = tiny_model()
    else:
        from mosr.models import load_model

        loaded = load_model(args.model, args.adapter)
    out = args.out or tempfile.mkdtemp(prefix="mosr-steer-bench-")
    prompts = test_prompts(args.gen_prompts)
    print(f"model {loaded.spec}{' + ' + args.adapter if args.adapter else ''}; {machine()}; n_train {args.n_train}, "
          f"val prompts {args.val_prompts} per measure, {args.max_new_tokens} tokens per val answer; "
          f"overhead on {len(prompts)} prompts x {args.gen_tokens} tokens")
    rows = []
    for name in [m.strip() for m in args.methods.split(",") if m.strip()]:
        method, mode = ("refusal-direction", "ablate") if name == "ablate" else (name, "add")
        cfg = SteerConfig(method=method, mode=mode, model=args.model, adapter=args.adapter, n_train=args.n_train,
                          val_prompts=args.val_prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
        folder = os.path.join(out, name)
        reused = args.reuse and os.path.exists(os.path.join(folder, "steering.json"))
        t = time.perf_counter()
        art = load_steering(folder) if reused else run_steer(cfg, folder, loaded=loaded)
        total = time.perf_counter() - t
        import json

        sel = json.loads(open(os.path.join(out, name, "selection.json")).read())
        plain, steered = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            generate(loaded, prompts, max_new_tokens=args.gen_tokens, batch_size=args.batch_size, ignore_eos=True)
            plain.append(time.perf_counter() - t)
            with steer(loaded, art):
                t = time.perf_counter()
                generate(loaded, prompts, max_new_tokens=args.gen_tokens, batch_size=args.batch_size, ignore_eos=True)
                steered.append(time.perf_counter() - t)
        rows.append({
            "method": name, "candidates": len(sel["candidates"]), "data s": f"{sel['timings']['data_s']:.1f}", "extract s": f"{sel['timings']['extract_s']:.1f}",
            "select s": f"{sel['timings']['select_s']:.1f}", "total min": "reused" if reused else f"{total / 60:.2f}",
            "chosen": ", ".join(f"{k}={v}" for k, v in sel["chosen"].items()),
            "gen s plain": f"{min(plain):.2f}", "gen s steered": f"{min(steered):.2f}",
            "overhead": f"{min(steered) / min(plain) - 1:+.1%}",
        })
    print_table(rows, ["method", "candidates", "data s", "extract s", "select s", "total min", "chosen", "gen s plain", "gen s steered",
                       "overhead"])
    print(f"steering runs: {out}")


if __name__ == "__main__":
    main()
