"""How close to the fp32 matmul peak can one batched decoding step get? A breakdown and its ceilings.

Usage: python benchmarks/decode_ceiling.py [--batch 64] [--context 100] [--steps 24] [--repeats 5]

On the model's real weights (Llama-style blocks: q/k/v/o and gate/up/down projections, an LM head),
at ``--batch`` rows whose KV cache holds ``--context`` positions, it times:

* a whole decoding step as mosr's generation loop runs it (``model(...)`` on a buffered KV cache,
  one new token per row; median of ``--steps`` steps);
* the step's matrix products alone, weights in the order a step reads them (every block, then the
  LM head): **streamed**, since the weights (about 540 MB in fp32 for the default model) cannot stay
  in cache from one step to the next; and **hot**, the first block's products repeated, whose
  weights stay in cache, as an upper bound for these shapes;
* the same streamed products with q/k/v and gate/up each concatenated into one matrix, and whether
  their outputs are bit-identical to the separate products (a condition for keeping greedy outputs
  unchanged);
* the attention calls of a step, with the shapes transformers' SDPA path uses when decoding
  (grouped-query heads packed, a boolean padding mask, keys and values as views of a larger buffer).

It prints a table of milliseconds per step and achieved GFLOP/s, then the share of the measured peak
that a step would reach, counting 2 x parameters per new token as benchmarks/generation.py does, if
it were only: what it is now; the streamed products plus attention; the streamed products; the hot
products. A target above the last of these cannot be reached at this batch size by removing Python
overhead, copies or element-wise work; only faster products can.
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, matmul_peak_gflops, print_table  # noqa: E402

from mosr.errors import ConfigError  # noqa: E402
from mosr.generation import _buffered_cache  # noqa: E402
from mosr.models import load_model  # noqa: E402

PROJECTIONS = (("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
               ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj"))


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def block_weights(model: torch.nn.Module) -> list[list[torch.Tensor]]:
    try:
        layers = model.model.layers
        return [[getattr(getattr(layer, part), name).weight for part, name in PROJECTIONS] for layer in layers]
    except AttributeError as e:
        raise ConfigError(f"{type(model).__name__} has no Llama-style blocks (model.layers[i].self_attn.q_proj, ...): {e}") from e


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=100, help="KV-cache positions per row during the timed steps")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    torch.manual_seed(0)
    loaded = load_model(args.model)
    model = loaded.model.eval()
    cfg = model.config
    blocks = block_weights(model)
    head = model.get_output_embeddings().weight
    b = args.batch
    flops_token = 2.0 * sum(p.numel() for p in model.parameters())
    step_gflop = b * flops_token / 1e9
    peak = matmul_peak_gflops()

    with torch.inference_mode():
        # a whole step, as the generation loop runs it
        ids = torch.randint(0, cfg.vocab_size, (b, args.context - args.steps))
        attn = torch.ones_like(ids)
        cache = _buffered_cache(model, args.context + 1)
        res = model(input_ids=ids, attention_mask=attn, use_cache=True, past_key_values=cache, logits_to_keep=1)
        pos = torch.full((b, 1), ids.shape[1])
        step_times = []
        for _ in range(args.steps):
            nxt = res.logits[:, -1, :].max(dim=-1).indices[:, None]
            attn = torch.cat([attn, attn.new_ones((b, 1))], dim=1)
            t = time.perf_counter()
            res = model(input_ids=nxt, attention_mask=attn, position_ids=pos, use_cache=True, past_key_values=res.past_key_values, logits_to_keep=1)
            res.logits[:, -1, :].max(dim=-1)
            step_times.append(time.perf_counter() - t)
            pos = pos + 1
        step_ms = 1e3 * statistics.median(step_times)

        hidden, inter = cfg.hidden_size, cfg.intermediate_size
        x_h, x_i = torch.randn(b, hidden), torch.randn(b, inter)

        def products(weights: list[list[torch.Tensor]]) -> None:
            for ws in weights:
                for w in ws:
                    F.linear(x_i if w.shape[1] == inter else x_h, w)
            F.linear(x_h, head)

        streamed_ms = median_ms(lambda: products(blocks), args.repeats)
        hot_ms = median_ms(lambda: products([blocks[0]] * len(blocks)), args.repeats)
        head_ms = median_ms(lambda: F.linear(x_h, head), args.repeats)
        fused = [[torch.cat(ws[0:3]), ws[3], torch.cat(ws[4:6]), ws[6]] for ws in blocks]
        fused_ms = median_ms(lambda: products(fused), args.repeats)
        identical = all(
            torch.equal(F.linear(x_h, torch.cat(ws[0:3])), torch.cat([F.linear(x_h, w) for w in ws[0:3]], dim=-1))
            and torch.equal(F.linear(x_h, torch.cat(ws[4:6])), torch.cat([F.linear(x_h, w) for w in ws[4:6]], dim=-1))
            for ws in blocks)

        heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        dim = getattr(cfg, "head_dim", None) or hidden // heads
        q = torch.randn(b, kv_heads, heads // kv_heads, dim)
        kbuf, vbuf = torch.randn(b, kv_heads, args.context + 16, dim), torch.randn(b, kv_heads, args.context + 16, dim)
        k, v = kbuf[:, :, : args.context], vbuf[:, :, : args.context]
        mask = torch.ones(b, 1, 1, args.context, dtype=torch.bool)
        mask[: b // 4, ..., : args.context // 4] = False  # some rows left-padded
        attention_ms = median_ms(lambda: [F.scaled_dot_product_attention(q, k, v, attn_mask=mask) for _ in blocks], args.repeats)

    def gflops(gflop: float, ms: float) -> str:
        return f"{gflop / ms * 1e3:.0f}"

    head_gflop = 2.0 * b * head.numel() / 1e9
    rows = [
        {"part of a decoding step": "whole step (mosr's loop)", "ms per step": f"{step_ms:.1f}", "GFLOP/s": gflops(step_gflop, step_ms)},
        {"part of a decoding step": "matrix products, streamed weights", "ms per step": f"{streamed_ms:.1f}", "GFLOP/s": gflops(step_gflop, streamed_ms)},
        {"part of a decoding step": "  of which the LM head", "ms per step": f"{head_ms:.1f}", "GFLOP/s": gflops(head_gflop, head_ms)},
        {"part of a decoding step": "matrix products, q|k|v and gate|up fused", "ms per step": f"{fused_ms:.1f}", "GFLOP/s": gflops(step_gflop, fused_ms)},
        {"part of a decoding step": "matrix products, weights hot in cache", "ms per step": f"{hot_ms:.1f}", "GFLOP/s": gflops(step_gflop, hot_ms)},
        {"part of a decoding step": "attention (SDPA, packed GQA)", "ms per step": f"{attention_ms:.1f}", "GFLOP/s": ""},
        {"part of a decoding step": "the rest (step - streamed products - attention)", "ms per step": f"{step_ms - streamed_ms - attention_ms:.1f}", "GFLOP/s": ""},
    ]
    for r in rows:
        r["share of step"] = f"{100 * float(r['ms per step']) / step_ms:.0f}%"
    ceilings = [
        ("the whole step, as it is", step_ms),
        ("only the streamed products and attention", streamed_ms + attention_ms),
        ("only the streamed products", streamed_ms),
        ("only the products, weights hot in cache", hot_ms),
    ]
    print(f"\nDecoding-step ceiling, {datetime.datetime.now():%Y-%m-%d %H:%M}, {machine()}; model {args.model}; batch {b}, "
          f"{args.context} cached positions, median of {args.steps} steps / {args.repeats} repeats; measured fp32 matmul peak "
          f"{peak:.0f} GFLOP/s; {step_gflop:.2f} GFLOP per step (2 x {flops_token / 2e6:.1f} M parameters per row); "
          f"fused products bit-identical to separate: {identical}; load average at the start {load_before:.2f}, at the end {os.getloadavg()[0]:.2f}\n")
    print_table(rows, ["part of a decoding step", "ms per step", "GFLOP/s", "share of step"])
    print()
    print_table([{"if a step were": name, "ms": f"{ms:.1f}", "% of peak (decode)": f"{100 * step_gflop / ms * 1e3 / peak:.1f}"} for name, ms in ceilings],
                ["if a step were", "ms", "% of peak (decode)"])


if __name__ == "__main__":
    main()
