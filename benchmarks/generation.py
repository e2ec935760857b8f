"""Generation throughput: mosr's batched greedy decoding vs a naive one-prompt-at-a-time loop.

Usage: python benchmarks/generation.py [--n 64] [--max-new-tokens 64] [--batch-sizes 16,32,64] [--no-naive]

Prints a markdown table: tokens/s, speed-up over the naive loop, achieved GFLOP/s and share of the
machine's measured fp32 matmul peak, and how many greedy outputs equal the reference's. Each batch
size runs twice: with transformers' concatenating DynamicCache (the loop before the buffered KV
cache) and with mosr's buffered cache, so the two are timed in one run on the same load.

Work is counted two ways. "decode GFLOP/s" counts only the new tokens (2 x parameters each), as
earlier versions of this benchmark did. "all GFLOP/s" adds the prompt tokens the batch must read
before it writes (2 x block parameters per real, non-padding prompt token; padding is not counted,
so padding waste lowers it).
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


def flops_per_prompt_token(model: torch.nn.Module) -> float:
    """2 x parameters of the transformer blocks: a prompt token goes through every block, not the LM head."""
    embed = model.get_input_embeddings().weight.numel()
    return 2.0 * (sum(p.numel() for p in model.parameters()) - embed)


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
    import mosr.generation as gen

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="default")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-sizes", default="16,32,64")
    ap.add_argument("--no-naive", action="store_true", help="skip the one-prompt-at-a-time loop (about 8 minutes on 2 cores)")
    args = ap.parse_args()

    load_before = os.getloadavg()[0]
    loaded = load_model(args.model)
    tok = loaded.tokenizer
    half = args.n // 2
    prompts = [s.prompt for s in load_dataset("xstest-safe", limit=half)] + [s.prompt for s in load_dataset("advbench:test", limit=args.n - half)]
    prompt_tokens = count_tokens(tok, [format_prompt(tok, p) for p in prompts])
    peak = matmul_peak_gflops()
    fpt, fpp = flops_per_token(loaded.model), flops_per_prompt_token(loaded.model)
    rows: list[dict] = []
    ref, ref_name, base_tps = None, None, None

    def row(method: str, outs: list[str], n_tok: int, dt: float) -> None:
        nonlocal ref, ref_name, base_tps
        tps = n_tok / dt
        decode, total = tps * fpt / 1e9, (n_tok * fpt + prompt_tokens * fpp) / dt / 1e9
        if ref is None:
            ref, ref_name, base_tps = outs, method, tps
        same = sum(a == b for a, b in zip(outs, ref))
        rows.append({"method": method, "new tokens": n_tok, "seconds": f"{dt:.1f}", "tokens/s": f"{tps:.1f}",
                     "speed-up": f"{tps / base_tps:.1f}x", "decode GFLOP/s": f"{decode:.1f}", "% of peak (decode)": f"{100 * decode / peak:.1f}",
                     "all GFLOP/s": f"{total:.1f}", "% of peak (all)": f"{100 * total / peak:.1f}", "same output": f"{same}/{len(prompts)}"})
        for i, (a, b) in enumerate(zip(outs, ref)):
            if a != b:
                common = len(os.path.commonprefix([a, b]))
                print(f"  {method}: prompt {i} differs from {ref_name} after {common} chars: ...{a[common:common + 40]!r} vs ...{b[common:common + 40]!r}", file=sys.stderr)

    if not args.no_naive:
        t = time.perf_counter()
        outs, n_tok = naive(loaded, prompts, args.max_new_tokens)
        row("naive model.generate, 1 prompt at a time", outs, n_tok, time.perf_counter() - t)
    buffered = gen._buffered_cache
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for name, cache in (("concatenating DynamicCache", lambda model, capacity: None), ("buffered KV cache", buffered)):
            gen._buffered_cache = cache
            try:
                t = time.perf_counter()
                outs = generate(loaded, prompts, max_new_tokens=args.max_new_tokens, batch_size=bs, desc=f"{name}, batch {bs}")
                dt = time.perf_counter() - t
            finally:
                gen._buffered_cache = buffered
            row(f"mosr.generate, batch {bs}, {name}", outs, count_tokens(tok, outs), dt)
    print(f"\nGeneration benchmark, {datetime.datetime.now():%Y-%m-%d %H:%M}, {machine()}; model {args.model}; n={len(prompts)} prompts "
          f"({prompt_tokens} prompt tokens), max_new_tokens={args.max_new_tokens}; measured fp32 matmul peak {peak:.0f} GFLOP/s; "
          f"{fpt / 1e9:.3f} GFLOP per new token, {fpp / 1e9:.3f} per prompt token; load average at the start {load_before:.2f}, at the end {os.getloadavg()[0]:.2f}\n")
    print_table(rows, list(rows[0]))


if __name__ == "__main__":
    main()
