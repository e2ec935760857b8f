"""Generation throughput: mosr's batched greedy decoding vs a naive one-prompt-at-a-time loop.

Usage: python benchmarks/generation.py [--n 64] [--max-new-tokens 64] [--batch-sizes 16,32,64]

Prints a markdown table: tokens/s, speed-up over the naive loop, achieved GFLOP/s and share of the
machine's measured fp32 matmul peak, and how many greedy outputs equal the naive loop's.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, matmul_peak_gflops, print_table  # noqa: E402

from mosr.data import load_dataset  # noqa: E402
from mosr.generation import generate, stop_token_ids  # noqa: E402
from mosr.models import format_prompt, load_model  # noqa: E402


def flops_per_token(model: torch.nn.Module) -> float:
    """2 x parameters that take part in a decode step (the tied embedding counts once, as lm_head)."""
    return 2.0 * sum(p.numel() for p in model.parameters())


def naive(loaded, prompts, max_new_tokens):
    tok, outs, n_tokens = loaded.tokenizer, [], 0
    for p in prompts:
        ids = tok(format_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
        with torch.inference_mode():
            out = loaded.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=tok.pad_token_id, eos_token_id=stop_token_ids(tok))
        new = out[0][ids["input_ids"].shape[1]:]
        new = [t for t in new.tolist() if t not in stop_token_ids(tok)]
        n_tokens += len(new)
        outs.append(tok.decode(new, skip_special_tokens=True).strip())
    return outs, n_tokens


def count_tokens(tok, texts):
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="16,32,64")
    args = ap.parse_args()

    loaded = load_model(args.model)
    half = args.n // 2
    prompts = [s.prompt for s in load_dataset("xstest-safe", limit=half)] + [s.prompt for s in load_dataset("advbench:test", limit=args.n - half)]
    peak = matmul_peak_gflops()
    fpt = flops_per_token(loaded.model)
    rows = []

    t = time.perf_counter()
    ref, ref_tokens = naive(loaded, prompts, args.max_new_tokens)
    dt = time.perf_counter() - t
    naive_tps = ref_tokens / dt
    rows.append({"method": "naive model.generate, 1 prompt at a time", "tokens": ref_tokens, "seconds": f"{dt:.1f}",
                 "tokens/s": f"{naive_tps:.1f}", "speed-up": "1.0x", "GFLOP/s": f"{naive_tps * fpt / 1e9:.1f}",
                 "% of peak": f"{100 * naive_tps * fpt / 1e9 / peak:.1f}", "same output": f"{len(prompts)}/{len(prompts)}"})
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        t = time.perf_counter()
        outs = generate(loaded, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs)
        dt = time.perf_counter() - t
        n_tok = count_tokens(loaded.tokenizer, outs)
        tps = n_tok / dt
        same = sum(a == b for a, b in zip(outs, ref))
        rows.append({"method": f"mosr.generate, batch {bs}", "tokens": n_tok, "seconds": f"{dt:.1f}", "tokens/s": f"{tps:.1f}",
                     "speed-up": f"{tps / naive_tps:.1f}x", "GFLOP/s": f"{tps * fpt / 1e9:.1f}",
                     "% of peak": f"{100 * tps * fpt / 1e9 / peak:.1f}", "same output": f"{same}/{len(prompts)}"})
        for i, (a, b) in enumerate(zip(outs, ref)):
            if a != b:
                common = len(os.path.commonprefix([a, b]))
                print(f"  differs at prompt {i} after {common} chars: ...{a[common:common + 40]!r} vs ...{b[common:common + 40]!r}", file=sys.stderr)
    print(f"\nGeneration benchmark, {datetime.date.today()}, {machine()}; model {args.model}; n={len(prompts)} prompts, "
          f"max_new_tokens={args.max_new_tokens}; measured fp32 matmul peak {peak:.0f} GFLOP/s; "
          f"{fpt / 1e9:.2f} GFLOP/token\n")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
