"""``mosr eval``: safety, over-refusal and capability of a model (and adapter)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mosr.distributed import process_group
from mosr.evaluation import EvalConfig, headline, run_eval


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="generate, judge and score a model on the evaluation suites")
    p.add_argument("--model", default="default", help="'default' (embedded SmolLM2-135M), a hub id, a local folder or a .gguf file")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder (from mosr train); a mosr steer run is taken as --steering")
    p.add_argument("--steering", default=None, metavar="RUN",
                   help="apply a steering run (from mosr steer) during generation; see docs/STEERING.md")
    p.add_argument("--suite", default=None, help="safety, over-refusal, capability, all, or a comma list; validation = the :val splits, for choosing settings (default: over-refusal, or none when --dataset is given)")
    p.add_argument("--dataset", action="append", default=[], metavar="FILE",
                   help="also evaluate your own CSV/JSONL prompts (repeatable); reported per set as suite 'custom'")
    p.add_argument("--prompt-column", default="prompt", help="prompt column of --dataset files")
    p.add_argument("--label-column", default=None, help="optional benign/harmful label column of --dataset files")
    p.add_argument("--out", required=True, help="run folder (rerun into the same folder to resume)")
    p.add_argument("--limit", type=int, default=None, help="first N samples of each set (default: all)")
    p.add_argument("--judge", default="default", help="judge name (see docs/JUDGES.md)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--long-prompts", choices=("refuse", "truncate"), default="refuse",
                   help="a prompt longer than the model's context minus --max-new-tokens: refuse the run (default), or cut the "
                        "prompt from the middle (recorded in its completion)")
    p.add_argument("--max-batch-tokens", type=int, default=32768,
                   help="memory budget of one generation batch in tokens: rows x (longest prompt + max new tokens)")
    p.add_argument("--pool-tasks", action="store_true",
                   help="decode the prompts of every set and attack in one batch plan (longest first) instead of set by "
                        "set: fewer, fuller batches when the sets are small (e.g. with --limit)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    adapter, steering = args.adapter, args.steering
    if adapter is not None and steering is None:
        from mosr.steering.artifact import is_steering_run

        if is_steering_run(adapter) and not (Path(adapter) / "adapter_config.json").is_file():
            from mosr.steering import load_steering

            steering, adapter = adapter, load_steering(adapter).model.get("adapter")
    config = EvalConfig(
        model=args.model, adapter=adapter, steering=steering, suites=args.suite or ([] if args.dataset else ["over-refusal"]),
        datasets=args.dataset, prompt_column=args.prompt_column, label_column=args.label_column, limit=args.limit, judge=args.judge,
        max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, system=args.system, seed=args.seed,
        long_prompts=args.long_prompts, max_batch_tokens=args.max_batch_tokens, pool_tasks=args.pool_tasks,
    )
    metrics = run_eval(config, args.out)
    if not process_group().is_main:
        return 0  # several processes: the main one reports
    for name, value in headline(metrics).items():
        print(f"{name:24} {value.fmt() if hasattr(value, 'fmt') else f'{value:.2f}'}")
    print(f"results: {args.out}/summary.md")
    return 0
