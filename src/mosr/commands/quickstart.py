"""``mosr quickstart``: a small RR and a small MOSR adapter on the embedded model, evaluated and reported.

It is ``mosr experiment`` with the config below (also in ``configs/quickstart.yaml``, kept identical
by a test). Rerunning it reuses every finished stage.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from mosr.experiment import ExperimentConfig, run_experiment

QUICKSTART_YAML = """\
# mosr quickstart: the base model, a small RR adapter and a small MOSR adapter on the embedded
# SmolLM2-135M-Instruct, evaluated on the first 20 prompts of four sets, analysed, and reported.
# About 13 minutes on two idle CPU cores (measured): a demonstration of the pipeline, not a measurement
# (30 training steps for MOSR, 60 for RR, on 64 pairs; intervals over 20 prompts are wide). A rerun reuses every
# finished stage. The same keys run the full experiment: see configs/experiment.yaml and
# docs/EXPERIMENT.md.
title: "mosr quickstart: RR and MOSR on SmolLM2-135M-Instruct"
model: default
methods: [undefended, rr, mosr]
seeds: [0]
train:
  steps: 30
  lr: 0.001
  batch_size: 4
  max_length: 96
  pair_datasets: [derta]
  harmful_datasets: []        # nothing to generate: the DeRTa pairs carry harmful answers
  max_pairs: 64
  max_retain: 64
  max_pseudo: 24
  own_max_new_tokens: 32
  checkpoint_every: 0
method_train:                 # as chosen on :val (docs/TRAINING.md); rr needs 60 steps to leave its start
  rr: {retain_scale: 4.0, lr: 5.0e-4, lora_b_init_std: 0.01, steps: 60}
  mosr: {retain_scale: 4.0}
eval:
  suites: [safety, over-refusal, capability]
  sets: [advbench:test, xstest-safe, or-bench-hard:test, self-instruct:test]
  limit: 20
  max_new_tokens: 32
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
    p = sub.add_parser("quickstart", help="train small RR and MOSR adapters on the default model, evaluate them and write a report",
                       description="Train a small RR and a small MOSR adapter on the embedded default model, evaluate the base "
                                   "model and both adapters on subsets of the suites, analyse their representations, and write "
                                   "an HTML report. About 13 minutes on two idle CPU cores (measured); a rerun reuses the cache.")
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
