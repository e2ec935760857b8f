"""Training throughput of the representation-rerouting step, with and without truncation.

One step = one erase batch and one retain batch of ``--rows`` x ``--seq`` tokens (no padding):
LoRA policy forward, frozen-reference forward (adapter disabled, no grad), backward, AdamW step.

Variants:
  truncated   blocks after max(target_layers) are dropped (what ``mosr train`` does)
  backbone    all blocks run, no LM head (truncation off: ``--set truncate=false``)
  naive       full causal-LM forward with ``output_hidden_states`` (LM head included), as a plain
              implementation would do it

FLOPs are counted analytically, as the useful work of each variant: 2 x (in x out) per token for
every frozen linear layer that runs, 2 x r x (in + out) per LoRA pair, attention scores and values
with causal averaging (4 x d x (S + 1) / 2 per token and layer), the LM head where it runs; the
backward pass costs the input gradients of every block from the first LoRA block up (frozen
weights: no weight gradients) plus input and weight gradients of the LoRA matrices. The peak is the
best of several fp32 ``2048 x 2048`` matmuls measured here, on the same threads.

Usage: python benchmarks/training.py [--model default] [--rows 8] [--seq 128] [--steps 2]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import matmul_peak_gflops  # noqa: E402


def block_linear_flops(model: nn.Module, r: int, lora_modules: set[str]) -> tuple[float, float, int]:
    """(frozen linear FLOPs, LoRA forward FLOPs) per token for one decoder block, and the attention width."""
    from mosr.models import find_layers

    block = find_layers(model)[0]
    frozen = lora = 0.0
    width = 0
    for name, mod in block.named_modules():
        if isinstance(mod, nn.Linear):
            frozen += 2 * mod.in_features * mod.out_features
            if name.rsplit(".", 1)[-1] in lora_modules:
                lora += 2 * r * (mod.in_features + mod.out_features)
            if name.endswith("q_proj"):
                width = mod.out_features
    return frozen, lora, width


def step_flops(variant: str, *, n_layers: int, keep: int, first_lora: int, frozen: float, lora: float, width: int,
               seq: int, tokens: int, vocab_head: float) -> float:
    attn = 4 * width * (seq + 1) / 2  # QK^T and AV, causal average, per token and layer
    run = keep if variant == "truncated" else n_layers
    fwd_policy = run * (frozen + attn) + keep * lora  # LoRA only on blocks <= max target
    fwd_ref = run * (frozen + attn)
    grad_blocks = keep - first_lora
    bwd = grad_blocks * (frozen + 2 * attn) + keep * 2 * lora
    head = 2 * vocab_head if variant == "naive" else 0.0
    return tokens * (fwd_policy + fwd_ref + bwd + head)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default")
    ap.add_argument("--rows", type=int, default=8, help="rows per batch (one erase + one retain batch per step)")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per variant (after one warm-up step)")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--variants", default="truncated,backbone,naive")
    ap.add_argument("--lora-r", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from mosr.models import load_model
    from mosr.testing import tiny_model
    from mosr.training import losses
    from mosr.training.config import TrainConfig
    from mosr.training.model import add_lora, hidden_at, linear_module_names

    loaded = tiny_model(num_layers=6, hidden_size=64) if args.model == "tiny" else load_model(args.model, device="cpu")
    model = loaded.model
    cfg = TrainConfig(method="rr", lora_r=args.lora_r, lora_alpha=args.lora_r, lora_dropout=0.0)
    n_layers = len(__import__("mosr.models", fromlist=["find_layers"]).find_layers(model))
    targets = cfg.resolved_target_layers(n_layers)
    lora_layers = cfg.resolved_lora_layers(n_layers)
    names = set(linear_module_names(model))
    frozen, lora_f, width = block_linear_flops(model, args.lora_r, names)
    head = model.get_output_embeddings()
    vocab_head = float(head.in_features * head.out_features)
    peft_model = add_lora(model, r=args.lora_r, alpha=args.lora_r, dropout=0.0, modules=["all-linear"], layers=lora_layers, seed=0)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    g = torch.Generator().manual_seed(0)
    vocab = loaded.tokenizer.vocab_size
    ids = torch.randint(100, vocab - 1, (2 * args.rows, args.seq), generator=g)
    mask = torch.ones_like(ids)
    tok_mask = torch.ones(args.rows, args.seq)
    keep = max(targets) + 1
    peak = matmul_peak_gflops()

    def hidden(variant: str) -> torch.Tensor:
        if variant == "naive":
            out = peft_model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            return torch.stack([out.hidden_states[t + 1] for t in targets])
        return hidden_at(peft_model, ids, mask, targets, truncate=variant == "truncated")

    def step(variant: str) -> None:
        hp = hidden(variant)
        with torch.no_grad(), peft_model.disable_adapter():
            hr = hidden(variant)
        per = losses.erase_per_sample(hp[:, : args.rows], hr[:, : args.rows], tok_mask)
        loss = 5 * losses.weighted_erase(per, torch.ones(args.rows)) + 5 * losses.retain_loss(hp[:, args.rows :], hr[:, args.rows :], tok_mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    tokens = ids.numel()
    rows = []
    for variant in args.variants.split(","):
        step(variant)
        t = time.perf_counter()
        for _ in range(args.steps):
            step(variant)
        dt = (time.perf_counter() - t) / args.steps
        fl = step_flops(variant, n_layers=n_layers, keep=keep, first_lora=min(lora_layers), frozen=frozen, lora=lora_f, width=width,
                        seq=args.seq, tokens=tokens, vocab_head=vocab_head)
        rows.append((variant, dt, tokens / dt, fl / dt / 1e9))
    peak_after = matmul_peak_gflops()
    print(f"# training step benchmark, {datetime.date.today()}, {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} threads, model {args.model} ({n_layers} blocks, targets {targets}, "
          f"LoRA r={args.lora_r} on blocks {min(lora_layers)}..{max(lora_layers)}, {len(names)} linear modules)")
    print(f"# step: erase + retain batches of {args.rows} x {args.seq} tokens = {tokens} tokens; n = {args.steps} timed steps per variant")
    print(f"# fp32 matmul peak: {peak:.1f} GFLOP/s before, {peak_after:.1f} GFLOP/s after")
    base = {v: tps for v, _, tps, _ in rows}
    print(f"| variant | blocks run | s/step | tokens/s | achieved GFLOP/s | % of peak | speed-up of truncated |")
    print("|---|---|---|---|---|---|---|")
    for variant, dt, tps, gf in rows:
        run = keep if variant == "truncated" else n_layers
        speed = base.get("truncated", tps) / tps
        print(f"| {variant} | {run}/{n_layers} | {dt:.2f} | {tps:.0f} | {gf:.1f} | {100 * gf / max(peak, peak_after):.0f}% | {speed:.2f}x |")


if __name__ == "__main__":
    main()
