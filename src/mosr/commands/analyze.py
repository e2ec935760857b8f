"""``mosr analyze``: where over-refused prompts sit in representation space (see :mod:`mosr.analysis_run`)."""

from __future__ import annotations

import argparse

from mosr.analysis_run import DEFAULT_BENIGN, DEFAULT_MALICIOUS, DEFAULT_PSEUDO, AnalyzeConfig, parse_layers, run_analyze
from mosr.distributed import process_group
from mosr.representations import POOLINGS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="where benign, malicious and over-refused prompts sit in representation space")
    p.add_argument("--model", default="default", help="'default' (embedded SmolLM2-135M), a hub id, a local folder or a .gguf file")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder: compare the base model with base+adapter")
    p.add_argument("--compare-model", default=None, help="a second model to compare with (same number of layers)")
    p.add_argument("--eval-run", default=None, help="a `mosr eval` run folder: split pseudo-malicious prompts into refused / answered")
    p.add_argument("--benign", nargs="+", default=list(DEFAULT_BENIGN), metavar="SPEC", help="benign dataset specs")
    p.add_argument("--malicious", nargs="+", default=list(DEFAULT_MALICIOUS), metavar="SPEC", help="harmful dataset specs")
    p.add_argument("--pseudo", nargs="+", default=list(DEFAULT_PSEUDO), metavar="SPEC", help="pseudo-malicious (benign but scary) specs")
    p.add_argument("--layers", nargs="+", default=None, help="decoder layers (0-based): ints, ranges 4-12, or all (default)")
    p.add_argument("--pooling", default="last", choices=POOLINGS, help="last prompt token, mean over prompt tokens, or over all tokens")
    p.add_argument("--limit", type=int, default=150, help="prompts per group (default 150; 0 = all)")
    p.add_argument("--plot-layers", nargs="+", default=None, help="layers for the 2-D projections (default: 4 at 1/4..full depth)")
    p.add_argument("--tsne", action="store_true", help="also draw t-SNE projections")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probe")
    p.add_argument("--k", type=int, default=10, help="neighbours for the kNN share")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="representation cache (default: OUT/representations)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = AnalyzeConfig(
        model=args.model, adapter=args.adapter, compare_model=args.compare_model, eval_run=args.eval_run,
        benign=tuple(args.benign), malicious=tuple(args.malicious), pseudo=tuple(args.pseudo), layers=parse_layers(args.layers),
        pooling=args.pooling, limit=args.limit or None, plot_layers=parse_layers(args.plot_layers),
        projection="tsne" if args.tsne else "pca", batch_size=args.batch_size, system=args.system, folds=args.folds, k=args.k,
        seed=args.seed, cache_dir=args.cache_dir,
    )
    metrics = run_analyze(cfg, args.out)
    if not process_group().is_main:
        return 0  # several processes: the main one reports
    for v in metrics["variants"]:
        best = max(v["layers"], key=lambda x: x["probe_accuracy"])
        print(f"{v['name']}: best probe accuracy {best['probe_accuracy']:.3f} at layer {best['layer']}")
    print(f"report: {args.out}/report.html")
    return 0
