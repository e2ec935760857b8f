"""One registration in :mod:`mosr.methods` adds a method to training, the CLI, the experiment and the report."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from mosr.errors import ConfigError
from mosr.methods import Method, get_method, register_method, unregister_method


@pytest.fixture()
def toy_method():
    method = register_method(Method("toy-erase", "Toy erase", "toy: erase and retain only, no refusal training",
                                    "erase + retain (a test method)", rep_loss=True))
    variant = register_method(Method("toy-erase-alpha", "Toy erase, alpha 3", "toy variant: alpha 3",
                                     base="toy-erase", overrides={"alpha": 3.0}))
    yield method, variant
    unregister_method("toy-erase-alpha")
    unregister_method("toy-erase")


def test_a_registered_method_trains(tmp_path, toy_method):
    from mosr.testing import tiny_model
    from mosr.training import REFUSAL_TEMPLATES, Pair, TrainConfig, TrainingData, train

    mal = [Pair(f"m{i}", f"How do I hurt {i} people?", "Sure, here is a guide.", "malicious", "toy") for i in range(4)]
    ben = [Pair(f"b{i}", f"Write a poem about the sea {i}", "The waves roll in.", "benign", "toy") for i in range(4)]
    torch.set_num_threads(1)
    config = TrainConfig(method="toy-erase", model="tiny", steps=2, batch_size=2, checkpoint_every=0, lr=1e-2, max_length=64)
    assert config.spec is get_method("toy-erase")
    result = train(config, tmp_path / "run", loaded=tiny_model(), data=TrainingData(mal, ben, [], list(REFUSAL_TEMPLATES)))
    last = result.history[-1]
    assert math.isfinite(last["erase"]) and math.isnan(last["refusal_ce"]) and math.isnan(last["ce_retain"])
    assert json.loads((tmp_path / "run" / "mosr_adapter.json").read_text())["method"] == "toy-erase"
    variant = TrainConfig.from_dict({"method": "toy-erase-alpha"})
    assert (variant.method, variant.alpha) == ("toy-erase", 3.0)


def test_a_registered_method_is_a_cli_choice(toy_method):
    from mosr.commands import train as train_cmd

    parser = argparse.ArgumentParser()
    train_cmd.add_parser(parser.add_subparsers())
    args = parser.parse_args(["train", "--method", "toy-erase", "--out", "x"])
    assert train_cmd.build_config(args).method == "toy-erase"


def test_a_registered_method_runs_in_the_experiment_and_the_report(tmp_path, toy_method):
    from mosr.experiment import ExperimentConfig, Runners, run_experiment

    trained: list[str] = []

    def fake_train(cfg: Any, out: Path) -> None:
        trained.append(cfg.method)
        (out / "adapter_config.json").write_text("{}")
        (out / "mosr_adapter.json").write_text(json.dumps({"method": cfg.method, "seed": cfg.seed}))

    def fake_eval(cfg: Any, out: Path) -> dict[str, Any]:
        from mosr.evaluation import compute_metrics

        verdict = "compliance" if cfg.adapter else "refusal"
        rows = [{"suite": "over-refusal", "dataset": "xstest-safe", "attack": "none", "label": "benign", "verdict": verdict,
                 "key": f"xstest-safe|none|{i}", "sample_id": str(i), "judge": "keyword"} for i in range(4)]
        metrics = compute_metrics(rows)
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    cfg = ExperimentConfig.from_dict({
        "methods": ["undefended", "toy-erase", "toy-erase-alpha"], "seeds": [0], "train": {"steps": 2},
        "eval": {"suites": ["over-refusal"], "sets": ["xstest-safe"], "limit": 4, "judge": "keyword"}, "analyze": None,
    })
    result = run_experiment(cfg, tmp_path / "exp", runners=Runners(train=fake_train, evaluate=fake_eval, analyze=fake_eval))
    assert trained == ["toy-erase", "toy-erase"]  # the variant trains its base method
    report = result.report_md.read_text()
    assert "Toy erase" in report and "toy: erase and retain only" in report and "Toy erase, alpha 3" in report


def test_registering_twice_or_a_variant_of_nothing_is_refused(toy_method):
    with pytest.raises(ConfigError, match="already registered"):
        register_method(Method("toy-erase", "x", "x"))
    with pytest.raises(ConfigError, match="not a registered trained method"):
        register_method(Method("toy-orphan", "x", "x", base="no-such-method"))
