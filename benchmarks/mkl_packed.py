"""Would MKL's packed weights speed up batch-64 generation with the same outputs? A probe.

Usage: python benchmarks/mkl_packed.py [--n 64] [--max-new-tokens 64]

Generates greedily for the same prompts (half advbench:test, half xstest-safe) at batch 64 twice
with mosr's loop as it is, then twice with every bias-free ``nn.Linear`` (the projections of every
block and the LM head) computed by ``torch.ops.mkl._mkl_linear`` on weights packed once per layer
(``_mkl_reorder_linear_weight``). Each (layer, rows) pair is checked against ``F.linear`` the first
time it occurs and falls back to it unless the two are bit-identical, so the outputs cannot change.
The first packed pass includes those checks. Prints a table: seconds, speed-up over the first
plain pass, greedy outputs equal to it, and how many (layer, rows) pairs were not bit-identical.
Needs a torch build with MKL (the x86 CPU wheels).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, matmul_peak_gflops, print_table  # noqa: E402

from mosr.data import load_dataset  # noqa: E402
from mosr.generation import generate  # noqa: E402
from mosr.models import load_model  # noqa: E402


class PackedLinear:
    """Patches ``nn.Linear.forward``; undone by :meth:`restore`."""

    def __init__(self) -> None:
        self.orig = torch.nn.Linear.forward
        self.packed: dict[int, torch.Tensor] = {}
        self.same: dict[tuple[int, int], bool] = {}
        outer = self

        def forward(mod: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
            if mod.bias is not None or x.dim() < 2:
                return outer.orig(mod, x)
            flat = x.reshape(-1, x.shape[-1])
            rows, key = flat.shape[0], (id(mod), flat.shape[0])
            if key not in outer.same:
                if id(mod) not in outer.packed:
                    outer.packed[id(mod)] = torch.ops.mkl._mkl_reorder_linear_weight(mod.weight, rows)
                ref = F.linear(flat, mod.weight)
                got = torch.ops.mkl._mkl_linear(flat, outer.packed[id(mod)], mod.weight, None, rows)
                outer.same[key] = bool(torch.equal(ref, got))
                return ref.reshape(*x.shape[:-1], -1)
            if not outer.same[key]:
                return outer.orig(mod, x)
            return torch.ops.mkl._mkl_linear(flat, outer.packed[id(mod)], mod.weight, None, rows).reshape(*x.shape[:-1], -1)

        torch.nn.Linear.forward = forward

    def restore(self) -> None:
        torch.nn.Linear.forward = self.orig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    if not hasattr(torch.ops.mkl, "_mkl_linear"):
        raise SystemExit("this torch build has no MKL linear ops")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    loaded = load_model("default")
    half = args.n // 2
    prompts = [s.prompt for s in load_dataset("advbench:test")][:half] + [s.prompt for s in load_dataset("xstest-safe")][: args.n - half]
    peak = matmul_peak_gflops()

    def timed() -> tuple[list[str], float]:
        t = time.perf_counter()
        outs = generate(loaded, prompts, max_new_tokens=args.max_new_tokens, batch_size=64)
        return outs, time.perf_counter() - t

    runs = [("plain", *timed()), ("plain, again", *timed())]
    patch = PackedLinear()
    try:
        runs += [("MKL packed (with the first-use checks)", *timed()), ("MKL packed", *timed())]
    finally:
        patch.restore()
    ref, t_ref = runs[0][1], runs[0][2]
    cols = ["loop", "seconds", "speed-up", "same output"]
    rows = [dict(zip(cols, [name, f"{dt:.2f}", f"{t_ref / dt:.2f}x", f"{sum(a == b for a, b in zip(ref, outs))}/{len(ref)}"]))
            for name, outs, dt in runs]
    print(f"# MKL packed weights, batch 64, {len(prompts)} prompts, {args.max_new_tokens} new tokens; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine()}; fp32 matmul peak {peak:.0f} GFLOP/s; "
          f"load average {os.getloadavg()[0]:.2f}")
    print_table(rows, cols)
    bad = sum(not v for v in patch.same.values())
    print(f"\n(layer, rows) pairs not bit-identical, left to F.linear: {bad} of {len(patch.same)}")


if __name__ == "__main__":
    main()
