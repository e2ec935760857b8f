"""One config loader (mosr.config) for the train, eval, analyze and experiment configs."""

from __future__ import annotations

import pytest

from mosr.analysis_run import AnalyzeConfig
from mosr.errors import ConfigError
from mosr.evaluation import EvalConfig
from mosr.experiment import ExperimentConfig
from mosr.training import TrainConfig


def _yaml(tmp_path, text: str):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_eval_and_analyze_configs_load_from_yaml(tmp_path):
    ec = EvalConfig.load(_yaml(tmp_path, "suites: [over-refusal]\nlimit: 5\njudge: keyword\n"), {"max_new_tokens": 8})
    assert (ec.suites, ec.limit, ec.judge, ec.max_new_tokens) == (["over-refusal"], 5, "keyword", 8)
    ac = AnalyzeConfig.load(_yaml(tmp_path, "layers: [1, 3]\npseudo: [xstest-safe]\nlimit: 20\n"))
    assert (ac.layers, ac.pseudo, ac.limit) == ((1, 3), ("xstest-safe",), 20)


@pytest.mark.parametrize("cls", [TrainConfig, EvalConfig, AnalyzeConfig, ExperimentConfig])
def test_unknown_keys_are_named(tmp_path, cls):
    with pytest.raises(ConfigError, match="unknown .*key 'bogus_key'"):
        cls.load(_yaml(tmp_path, "bogus_key: 1\n"))


@pytest.mark.parametrize("cls, text, key", [
    (TrainConfig, "steps: many\n", "steps"),
    (EvalConfig, "max_new_tokens: '8'\n", "max_new_tokens"),
    (EvalConfig, "limit: 2.5\n", "limit"),
    (AnalyzeConfig, "k: [1]\n", "k"),
    (AnalyzeConfig, "layers: [one]\n", "layers"),
    (ExperimentConfig, "title: 3\n", "title"),
    (ExperimentConfig, "train: [steps]\n", "train"),
])
def test_wrong_types_are_named(tmp_path, cls, text, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b"):
        cls.load(_yaml(tmp_path, text))


def test_exponent_floats_and_yaml_errors(tmp_path):
    assert TrainConfig.load(_yaml(tmp_path, "lr: 5e-4\n")).lr == 5e-4
    with pytest.raises(ConfigError, match="invalid YAML"):
        EvalConfig.load(_yaml(tmp_path, "suites: [\n"))
    with pytest.raises(ConfigError, match="expected a mapping"):
        AnalyzeConfig.load(_yaml(tmp_path, "- a\n- b\n"))
    with pytest.raises(ConfigError, match="not found"):
        EvalConfig.load(tmp_path / "missing.yaml")


def test_experiment_sections_are_checked_with_the_same_loader(tmp_path):
    from mosr.experiment import analyze_config, eval_config

    cfg = ExperimentConfig.from_dict({"methods": ["undefended"], "eval": {"limit": "5"}, "analyze": {"layers": [2]}})
    with pytest.raises(ConfigError, match="limit: expected int or null"):
        eval_config(cfg, None, 0)
    assert analyze_config(cfg, None, None, 0, str(tmp_path)).layers == (2,)
    bad = ExperimentConfig.from_dict({"methods": ["undefended"], "eval": {"limt": 5}})
    with pytest.raises(ConfigError, match="unknown eval key 'limt'"):
        eval_config(bad, None, 0)
