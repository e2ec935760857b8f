"""``mosr quickstart``: the chosen rr, xboundary and mosr adapters on the embedded model, evaluated and reported.

It is ``mosr experiment`` with the config below (also in ``configs/quickstart.yaml``, kept identical
by a test). Rerunning it reuses every finished stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mosr.experiment import ExperimentConfig, run_experiment

QUICKSTART_YAML = """\
# mosr quickstart: the base model and the chosen point of each defence (rr, xboundary, MOSR) on the
# embedded SmolLM2-135M-Instruct, evaluated on the first 25 prompts of six test sets, analysed, and
# reported. A demonstration of the pipeline with the settings chosen on :val splits, one seed, not a
# measurement (intervals over 25-50 prompts are wide; docs/RESULTS.md has the 3-seed test results).
# A rerun reuses every finished stage. The same keys run the full experiment: configs/experiment.yaml.
title: "mosr quickstart: the chosen rr, xboundary and MOSR on SmolLM2-135M-Instruct"
model: default
methods: [undefended, xboundary, rr, mosr-beta-warmup]
seeds: [0]
train:                        # configs/train-{rr,xboundary,mosr}.yaml, kept identical by a test
  target_layers: [10, 20]
  alpha: 10.0
  retain_scale: 4.0
  steps: 60
  batch_size: 4
  max_length: 128
  rep_norm: unit
  erase_tokens: content
  lora_r: 16
  lora_alpha: 16
  checkpoint_every: 0
method_train:                 # stop_after: the step the selection rule chose on :val (results/frontier-2026-12-06/selection-round10.json);
                              # MOSR: the mosr keys plus the variant's beta warm-up (results/ablations-val/chosen.json)
  rr: {lr: 5.0e-4, lora_b_init_std: 0.01, stop_after: 20}
  xboundary: {lr: 5.0e-4, lora_b_init_std: 0.01, xb_schedule_span: 1.6666666666666667, xb_separation_weight: 1.0,
              max_pseudo: null, stop_after: 10}
  mosr: {lr: 1.0e-3, oalw_similarity: knn, oalw_k: 8, oalw_tau: 0.05, oalw_sign: less, refusal_beta: 1.0,
         caa_zero_share: 0.3, caa_max_prefix: 40}
eval:
  suites: [safety, over-refusal, capability]
  sets: [advbench:test, harmbench:test, xstest-safe, or-bench-hard:test, jbb-benign, self-instruct:test]
  limit: 25
  max_new_tokens: 64
  batch_size: 64             # with pool_tasks: the 150 prompts in 3 batches, not 6 of 25 (same completions, measured)
  pool_tasks: true
  judge: default
analyze:
  limit: 30
  pseudo: [xstest-safe, or-bench-hard:test]
"""


def quickstart_config_path() -> Path | None:
    """``configs/quickstart.yaml`` of a source checkout (editable install), if there is one."""
    path = Path(__file__).resolve().parents[3] / "configs" / "quickstart.yaml"
    return path if path.is_file() else None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="train the chosen rr, xboundary and mosr adapters on the default model, evaluate them "
                                           "and write a report",
                       description="Train the rr, xboundary and mosr settings chosen on validation splits on the embedded "
                                   "default model (seed 0), evaluate the base model and the three adapters on the first 25 "
                                   "prompts of six test sets, analyse their representations, and write an HTML report. About "
                                   "15 minutes on two CPU cores (measured); a rerun reuses the cache.")
    p.add_argument("--out", default="runs/quickstart", help="experiment folder (default: runs/quickstart)")
    p.add_argument("--config", default=None, help="use this experiment config instead of the built-in quickstart one")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.config:
        cfg = ExperimentConfig.load(args.config)
    else:
        cfg = ExperimentConfig.from_dict(yaml.safe_load(QUICKSTART_YAML))
    result = run_experiment(cfg, args.out, command=f"mosr quickstart --out {args.out}")
    print(result.summary())
    return 0
