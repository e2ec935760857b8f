"""``mosr steer``: build an inference-time steering baseline (SCANS, refusal direction, AlphaSteer)."""

from __future__ import annotations

import argparse

from mosr.errors import ConfigError


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of numbers, got {text!r}") from exc


def _ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a comma list of layer indices, got {text!r}") from exc


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "steer",
        help="extract a steering baseline from :train splits and choose its knobs on :val splits",
        description="Extract SCANS, refusal-direction or AlphaSteer from :train splits, choose layer/strength/threshold/"
                    "regularisation on :val splits with the rule in docs/STEERING.md, and save a steering run. "
                    "Apply it with `mosr eval --steering RUN`.",
    )
    p.add_argument("--method", required=True, choices=["scans", "refusal-direction", "alphasteer"])
    p.add_argument("--mode", default="add", choices=["add", "ablate"],
                   help="refusal-direction only: add (induce refusal; a defence) or ablate (remove refusal; against over-refusal)")
    p.add_argument("--out", required=True, help="run folder for the steering artifact and the selection table")
    p.add_argument("--model", default="default", help="'default' (embedded SmolLM2-135M), a hub id, a local folder or a .gguf file")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder: steer the adapted model (e.g. ablate a defended one)")
    p.add_argument("--n-train", type=int, default=64, help="train prompts per role (harmful, benign[, borderline])")
    p.add_argument("--val-prompts", type=int, default=24, help="val prompts per measure (safety, over-refusal, capability)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="tokens per val answer")
    p.add_argument("--batch-size", type=int, default=72, help="generation batch for the val answers (72 = the default val budget in one batch)")
    p.add_argument("--layers", type=_ints, default=None,
                   help="comma list: candidate layers (refusal-direction) or the steered layers (scans, alphasteer)")
    p.add_argument("--strengths", type=_floats, default=None, help="comma list of candidate strengths (default per method)")
    p.add_argument("--regs", type=_floats, default=None, help="alphasteer: candidate relative ridge regularisations (default 0.1,1)")
    p.add_argument("--null-space-ratio", type=float, default=0.6, help="alphasteer: share of dimensions in the benign null space")
    p.add_argument("--max-over-refusal-increase", type=float, default=0.05, help="rule: allowed val over-refusal rise (defences)")
    p.add_argument("--max-safety-drop", type=float, default=0.05, help="rule: allowed val safety drop (ablate)")
    p.add_argument("--max-capability-drop", type=float, default=0.10, help="rule: allowed val capability drop")
    p.add_argument("--judge", default="default", help="judge that scores val answers (docs/JUDGES.md)")
    p.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mosr.steering import SteerConfig, run_steer

    if args.layers is not None and not args.layers:
        raise ConfigError("--layers is empty; give a comma list of layer indices such as 8,12")
    extra = {"regs": args.regs} if args.regs is not None else {}
    cfg = SteerConfig(
        method=args.method, mode=args.mode, model=args.model, adapter=args.adapter, n_train=args.n_train,
        val_prompts=args.val_prompts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, layers=args.layers,
        strengths=args.strengths, null_space_ratio=args.null_space_ratio, max_over_refusal_increase=args.max_over_refusal_increase,
        max_safety_drop=args.max_safety_drop, max_capability_drop=args.max_capability_drop, judge=args.judge,
        system=args.system, seed=args.seed, **extra,
    )
    art = run_steer(cfg, args.out)
    sel = art.options.get("selection", {})
    val, base = sel.get("val", {}), sel.get("unsteered_val", {})
    knobs = f"layers {list(art.layers)}, strength {art.strength:g}" + (f", threshold {art.threshold:.3f}" if art.threshold is not None else "")
    if "reg" in art.options:
        knobs += f", reg {art.options['reg']:g}"
    print(f"{art.method}{' (' + art.mode + ')' if art.method == 'refusal-direction' else ''}: {knobs}")
    print(f"val safety {base.get('safety', 0):.2f} -> {val.get('safety', 0):.2f}; over-refusal {base.get('over_refusal', 0):.2f} -> "
          f"{val.get('over_refusal', 0):.2f}; capability {base.get('capability', 0):.2f} -> {val.get('capability', 0):.2f}"
          + ("" if sel.get("constraints_met", True) else "  (no candidate met the rule's constraints)"))
    print(f"steering run: {args.out}  (use mosr eval --steering {args.out})")
    return 0
