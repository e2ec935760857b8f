"""``mosr train``: train MOSR, RR or a baseline and write a LoRA adapter run folder."""

from __future__ import annotations

import argparse

from mosr.training.config import METHODS, VARIANTS, TrainConfig, config_help


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a LoRA adapter with MOSR, RR or a baseline",
        description="Train a LoRA adapter. Config precedence: defaults < --config YAML < flags < --set key=value.",
        epilog="methods: " + "; ".join(f"{name}: {spec.description}" for name, spec in METHODS.items())
        + ". variants: " + "; ".join(f"{name}: {v.description}" for name, v in VARIANTS.items()),
    )
    p.add_argument("--method", choices=sorted([*METHODS, *VARIANTS]), help="training method or variant (default: mosr, or the config's)")
    p.add_argument("--model", help="base model spec (default: the embedded SmolLM2-135M-Instruct)")
    p.add_argument("--config", help="YAML file with config keys (see --list-keys)")
    p.add_argument("--out", help="run folder for the adapter, curves and checkpoints")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint (same config; only --steps and checkpointing may change)")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--stop-after", type=int, metavar="N", help="stop after N steps of the --steps schedule and keep them as checkpoint N "
                   "(export it with mosr.training.export_checkpoint; --resume later finishes the run); at most the config key stop_after "
                   "when that is set")
    p.add_argument("--seed", type=int, help="seed")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set alpha=5 --set target_layers=8,16 (repeatable)")
    p.add_argument("--list-keys", "--help-config", dest="list_keys", action="store_true",
                   help="print every config key with its default and help, then exit")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> TrainConfig:
    from mosr.training.config import layer_variant, parse_overrides, read_yaml

    data = read_yaml(args.config) if args.config else {}
    flags = {key: getattr(args, key) for key in ("method", "model", "steps", "seed") if getattr(args, key, None) is not None}
    data = layer_variant(data, flags)  # a variant named by --method sits above the YAML file
    return TrainConfig.from_dict(layer_variant(data, parse_overrides(args.overrides)))


def run(args: argparse.Namespace) -> int:
    if args.list_keys:
        for key, help_text, default in config_help():
            print(f"{key:22} {default!r:40} {help_text}")
        return 0
    if not args.out:
        from mosr.errors import ConfigError

        raise ConfigError("--out is required: the run folder for the adapter (e.g. runs/train-mosr)")
    from mosr.training import train

    cfg = build_config(args)
    result = train(cfg, args.out, resume=args.resume, stop_after=args.stop_after)
    if not result.is_main_process:
        return 0
    last = result.history[-1] if result.history else {}
    print(f"trained {cfg.method} for {result.steps} steps in {result.seconds:.0f} s ({result.tokens_per_s:.0f} tokens/s); "
          f"final loss {last.get('loss', float('nan')):.4f}")
    if result.steps < cfg.end_step:
        print(f"stopped after step {result.steps} of {cfg.steps}: checkpoint {result.steps} in {result.out}/checkpoints")
    else:
        print(f"adapter: {result.out}  (use --adapter {result.out})")
    return 0
