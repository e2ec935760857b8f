"""Throughput of representation extraction on the default model, against the machine's fp32 matmul peak.

    python benchmarks/extraction.py [--n 32] [--model default]

Prints one table row per setting: prompts/s, real tokens/s, padded tokens/s and the share of the
measured fp32 matmul peak. FLOPs are counted as 2 × (parameters of the decoder blocks that run) per
padded token: extraction stops after the deepest chosen layer and never runs the LM head, and the
embedding lookup is not a matmul. Attention score FLOPs are ignored (prompts are short).
"""

from __future__ import annotations

import argparse
import os
import time

import sys
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import matmul_peak_gflops  # noqa: E402

from mosr.data import load_dataset
from mosr.models import find_layers, load_model
from mosr.representations import extract


def prompts(n: int) -> list[str]:
    specs = ("self-instruct:test", "advbench:test", "or-bench-hard:test", "xstest-safe")
    per = -(-n // len(specs))
    out = []
    for spec in specs:
        out += [s.prompt for s in load_dataset(spec, limit=per)]
    return out[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=32, help="prompts per setting")
    args = parser.parse_args()
    os.environ.setdefault("MOSR_PROGRESS", "0")
    loaded = load_model(args.model)
    blocks = find_layers(loaded.model)
    n_layers = len(blocks)
    block_params = [sum(p.numel() for p in b.parameters()) for b in blocks]
    texts = prompts(args.n)
    peak = matmul_peak_gflops()
    print(f"model {loaded.spec}: {n_layers} layers, {sum(block_params) / 1e6:.1f} M block parameters; "
          f"torch threads {torch.get_num_threads()}; fp32 matmul peak {peak:.1f} GFLOP/s; n = {len(texts)} prompts")
    extract(loaded, texts[:4], batch_size=4)  # warm-up
    settings = [
        ("all layers", list(range(n_layers)), "last", 1),
        ("all layers", list(range(n_layers)), "last", 8),
        ("all layers", list(range(n_layers)), "last", 16),
        ("all layers", list(range(n_layers)), "prompt-mean", 16),
        (f"layers 0..{n_layers // 2 - 1}", list(range(n_layers // 2)), "last", 16),
    ]
    header = "| layers | pooling | batch | prompts/s | tokens/s | padded tokens/s | GFLOP/s | share of peak |"
    print(header)
    print("|" + "---|" * 8)
    for name, layers, pooling, batch in settings:
        t = time.perf_counter()
        reps = extract(loaded, texts, layers=layers, pooling=pooling, batch_size=batch)  # type: ignore[arg-type]
        seconds = time.perf_counter() - t
        active = sum(block_params[: max(layers) + 1])
        padded = reps.meta["n_padded_tokens"]
        gflops = 2 * active * padded / seconds / 1e9
        print(f"| {name} | {pooling} | {batch} | {len(texts) / seconds:.1f} | {reps.meta['n_tokens'] / seconds:.0f} | "
              f"{padded / seconds:.0f} | {gflops:.1f} | {gflops / peak:.0%} |")


if __name__ == "__main__":
    main()
