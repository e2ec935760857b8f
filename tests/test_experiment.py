"""mosr experiment: stage caching and invalidation, crash and resume, early config errors, the report.

The stage commands (train, eval, analyze) are replaced by fakes that write what the real ones write
(an adapter folder, eval metrics from synthetic judgments, analysis metrics and a figure), so these
tests run in seconds and check the orchestration alone.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from mosr.errors import ConfigError, RunError
from mosr.methods import DEFAULT as ALL_METHODS
from mosr.evaluation import compute_metrics, config_tasks, task_samples
from mosr.experiment import (
    DONE_FILE,
    STAGE_FILE,
    ExperimentConfig,
    Runners,
    build_plan,
    run_experiment,
)
from mosr.report import Cell, aggregate, combine, non_dominated, write_report

# How often each fake method refuses harmful prompts and benign-but-scary prompts.
PROFILE = {
    "undefended": (0.3, 0.1), "refusal-sft": (0.8, 0.6), "derta": (0.85, 0.5), "rr": (0.95, 0.7), "mosr": (0.9, 0.3),
    "mosr-no-oalw": (0.92, 0.45), "mosr-no-caa": (0.85, 0.35), "mosr-no-oalw-no-caa": (0.93, 0.55), "xboundary": (0.94, 0.4),
}


def _u(*parts: Any) -> float:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def fake_judgments(method: str, seed: int, tasks: list[tuple[str, str, str]], n: int) -> list[dict[str, Any]]:
    refuse_harm, refuse_benign = PROFILE[method]
    out = []
    for suite, dataset, attack in tasks:
        p = refuse_harm if suite == "safety" else refuse_benign if suite == "over-refusal" else refuse_benign / 4
        for i in range(n):
            u = _u(method, seed, dataset, attack, i)
            verdict = "compliance" if u >= p else ("gibberish" if u < p * 0.2 else "refusal")
            out.append({"suite": suite, "dataset": dataset, "attack": attack, "sample_id": str(i), "verdict": verdict})
    return out


def fake_eval_metrics(method: str, seed: int = 0, n: int = 20) -> dict[str, Any]:
    tasks = [("safety", "advbench:test", "none"), ("safety", "jbb-harmful", "none"), ("safety", "jbb-harmful", "prefill"),
             ("over-refusal", "xstest-safe", "none"), ("over-refusal", "or-bench-hard:test", "none"),
             ("capability", "self-instruct:test", "none")]
    metrics = compute_metrics(fake_judgments(method, seed, tasks, n), [{"tokens": 100, "nll_sum": 250.0 + 10 * seed}])
    metrics.update(judge="keyword", model="default")
    return metrics


def fake_analysis(adapter: bool, shift: float = 0.0) -> dict[str, Any]:
    def layers(delta: float) -> list[dict[str, Any]]:
        rows = []
        for layer in range(4):
            g = lambda m: {"n": 10, "probe_p": {"mean": m, "ci": [m - 0.1, m + 0.1]}, "centroid_ratio": {"mean": m, "ci": [m - 0.1, m + 0.1]},  # noqa: E731
                           "knn_share": {"mean": m, "ci": [m - 0.1, m + 0.1]}}
            rows.append({"layer": layer, "probe_accuracy": 0.7 + 0.05 * layer, "probe_ci": [0.6, 0.9], "n_probe": 20,
                         "groups": {"benign": g(0.2), "malicious": g(0.8), "pseudo": g(0.5 + delta - 0.02 * layer)}})
        return rows

    variants = [{"name": "base" if adapter else "model", "layers": layers(0.0)}]
    if adapter:
        variants.append({"name": "base+adapter", "layers": layers(shift)})
    return {"variants": variants, "layers": [0, 1, 2, 3]}


PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f00f0003030100c0c1b8b30000000049454e44ae426082"
)


class Fakes:
    """Fake stage commands that record their calls and can be told to crash."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.crash_on: set[tuple[str, str]] = set()

    def _who(self, adapter: str | None) -> str:
        if adapter is None:
            return "undefended"
        return json.loads((Path(adapter) / "mosr_adapter.json").read_text())["method"]

    def train(self, cfg: Any, out: Path) -> None:
        self.calls.append(("train", cfg.method))
        if ("train", cfg.method) in self.crash_on:
            raise RuntimeError(f"crash while training {cfg.method}")
        (out / "adapter_config.json").write_text("{}")
        (out / "mosr_adapter.json").write_text(json.dumps({"method": cfg.method, "seed": cfg.seed}))

    def evaluate(self, cfg: Any, out: Path) -> dict[str, Any]:
        method = self._who(cfg.adapter)
        self.calls.append(("eval", method))
        if ("eval", method) in self.crash_on:
            (out / "completions.jsonl").write_text('{"partial": true}\n')
            raise RuntimeError(f"crash while evaluating {method}")
        seed = json.loads((Path(cfg.adapter) / "mosr_adapter.json").read_text())["seed"] if cfg.adapter else 0
        metrics = fake_eval_metrics(method, seed, n=cfg.limit or 20)
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics

    def analyze(self, cfg: Any, out: Path) -> dict[str, Any]:
        method = self._who(cfg.adapter)
        self.calls.append(("analyze", method))
        metrics = fake_analysis(cfg.adapter is not None, shift=-0.1 if method == "mosr" else 0.1)
        (out / "metrics.json").write_text(json.dumps(metrics))
        (out / "pca.png").write_bytes(PNG)
        (out / "curves-compare.png").write_bytes(PNG)
        return metrics

    def runners(self) -> Runners:
        return Runners(train=self.train, evaluate=self.evaluate, analyze=self.analyze)

    def count(self, kind: str) -> int:
        return sum(k == kind for k, _ in self.calls)


@pytest.fixture(autouse=True)
def _no_judge_models(monkeypatch):
    """The judge is validated by name; building it is the eval stage's job (faked here)."""
    import mosr.experiment as experiment

    def check(name: str) -> None:
        from mosr.judges import JUDGES

        if name not in JUDGES:
            raise ConfigError(f"unknown judge {name!r}; valid judges: {', '.join(JUDGES)}")

    monkeypatch.setattr(experiment, "_check_judge", check)


def config(**kw: Any) -> ExperimentConfig:
    base: dict[str, Any] = {
        "methods": ["undefended", "rr", "mosr"], "seeds": [0], "train": {"steps": 2},
        "eval": {"suites": ["safety", "over-refusal"], "sets": ["advbench:test", "xstest-safe"], "limit": 5, "judge": "keyword"},
        "analyze": {"limit": 10},
    }
    base.update(kw)
    return ExperimentConfig.from_dict(base)


def test_full_run_then_rerun_uses_the_cache(tmp_path):
    fakes = Fakes()
    result = run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    assert Counter(k for k, _ in fakes.calls) == {"train": 2, "eval": 3, "analyze": 3}
    assert all(s.status == "ran" for s in result.stages)
    assert result.report_html.is_file() and result.report_md.is_file()
    for stage in result.stages:
        folder = tmp_path / "exp" / stage.name
        info = json.loads((folder / STAGE_FILE).read_text())
        assert (folder / DONE_FILE).read_text().strip() == info["hash"]
    fakes.calls.clear()
    again = run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    assert fakes.calls == []
    assert all(s.status == "cached" for s in again.stages)


def test_changing_eval_settings_does_not_retrain(tmp_path):
    fakes = Fakes()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    fakes.calls.clear()
    cfg = config(eval={"suites": ["safety", "over-refusal"], "sets": ["advbench:test", "xstest-safe"], "limit": 7, "judge": "keyword"})
    result = run_experiment(cfg, tmp_path / "exp", runners=fakes.runners())
    assert fakes.count("train") == 0
    assert fakes.count("eval") == 3 and fakes.count("analyze") == 3  # analysis reads the eval verdicts
    status = {s.name: s.status for s in result.stages}
    assert status["stages/train/mosr/seed0"] == "cached"
    assert status["stages/eval/mosr/seed0"] == "ran"
    assert "n=7" in result.report_md.read_text()


def test_changing_one_method_training_redoes_only_its_stages(tmp_path):
    fakes = Fakes()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    fakes.calls.clear()
    run_experiment(config(method_train={"mosr": {"oalw_tau": 0.1}}), tmp_path / "exp", runners=fakes.runners())
    assert fakes.calls == [("train", "mosr"), ("eval", "mosr"), ("analyze", "mosr")]


def test_analysis_settings_do_not_touch_eval_or_training(tmp_path):
    fakes = Fakes()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    fakes.calls.clear()
    run_experiment(config(analyze={"limit": 12}), tmp_path / "exp", runners=fakes.runners())
    assert Counter(k for k, _ in fakes.calls) == {"analyze": 3}


def test_crash_mid_run_then_rerun_loses_no_finished_stage(tmp_path):
    fakes = Fakes()
    fakes.crash_on = {("eval", "mosr")}
    with pytest.raises(RuntimeError, match="crash while evaluating mosr"):
        run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    crashed = tmp_path / "exp/stages/eval/mosr/seed0"
    assert (crashed / STAGE_FILE).is_file() and not (crashed / DONE_FILE).exists()
    assert not (tmp_path / "exp/report/report.html").exists()
    before = list(fakes.calls)
    fakes.calls.clear()
    fakes.crash_on = set()
    result = run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    assert ("train", "mosr") in before and ("train", "mosr") not in fakes.calls  # finished stages are kept
    assert fakes.calls == [("eval", "mosr"), ("analyze", "mosr")]
    assert (crashed / "completions.jsonl").is_file()  # same inputs: the half-done folder is resumed, not wiped
    assert result.report_html.is_file()


def test_unknown_method_fails_before_any_work(tmp_path):
    fakes = Fakes()
    with pytest.raises(ConfigError, match="unknown method 'mosr-typo'.*undefended"):
        run_experiment(config(methods=["rr", "mosr-typo"]), tmp_path / "exp", runners=fakes.runners())
    assert fakes.calls == [] and not (tmp_path / "exp").exists()


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"eval": {"judge": "no-such-judge"}}, "unknown judge 'no-such-judge'"),
        ({"train": {"retain_datasets": ["no-such-set:train"]}}, r"train\.retain_datasets: unknown dataset 'no-such-set'"),
        ({"analyze": {"pseudo": ["xstest-safe:nosplit"]}}, "analyze.pseudo"),
        ({"train": {"lr": -1}}, "lr must be > 0"),
        ({"train": {"no_such_key": 1}}, "unknown config key 'no_such_key'"),
        ({"eval": {"suites": ["safety"], "sets": ["xstest-safe"]}}, "sets: 'xstest-safe'"),
        ({"eval": {"adapter": "x"}}, "set by the experiment itself"),
        ({"sweep": {"param": "gamma", "values": [1]}}, "sweep.param"),
        ({"seeds": []}, "seeds"),
        ({"colour": "blue"}, "unknown experiment key 'colour'"),
    ],
)
def test_bad_config_fails_before_any_work(tmp_path, kw, match):
    fakes = Fakes()
    with pytest.raises(ConfigError, match=match):
        run_experiment(config(**kw), tmp_path / "exp", runners=fakes.runners())
    assert fakes.calls == [] and not (tmp_path / "exp").exists()


def test_unwritable_output_and_full_disk_are_clear_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RunError, match="cannot write to output folder"):
        run_experiment(config(), blocker / "exp", runners=Fakes().runners())

    fakes = Fakes()

    def full(cfg: Any, out: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(out / "adapter_model.safetensors"))

    runners = fakes.runners()
    runners.train = full
    with pytest.raises(RunError, match="no space left.*rerun the same command"):
        run_experiment(config(), tmp_path / "exp", runners=runners)


def test_seeds_are_pooled_and_undefended_runs_once(tmp_path):
    fakes = Fakes()
    result = run_experiment(config(seeds=[0, 1]), tmp_path / "exp", runners=fakes.runners())
    assert Counter(fakes.calls)[("train", "mosr")] == 2 and Counter(fakes.calls)[("eval", "undefended")] == 1
    summary = json.loads((tmp_path / "exp/report/summary.json").read_text())
    mosr = next(r for r in summary["rows"] if r["label"] == "mosr")
    assert mosr["seeds"] == [0, 1]
    assert mosr["rates"]["safety"]["pooled"]["n"] == 20  # 2 plain harmful sets x 5 prompts x 2 seeds
    assert "±" in result.report_md.read_text()


def test_sweep_reuses_the_main_run_at_the_same_value(tmp_path):
    fakes = Fakes()
    cfg = config(methods=["undefended", "mosr"], train={"steps": 2, "alpha": 10.0}, sweep={"param": "alpha", "values": [5, 10], "methods": ["mosr"]})
    plan = build_plan(cfg, tmp_path / "exp", fakes.runners())
    names = [s.name for s in plan.stages]
    assert "stages/train/mosr/seed0" in names and "stages/train/mosr/alpha=5/seed0" in names
    assert "stages/train/mosr/alpha=10/seed0" not in names  # identical to the main mosr run
    result = run_experiment(cfg, tmp_path / "exp", runners=fakes.runners())
    text = result.report_md.read_text()
    assert "## Sweep over alpha" in text and "figures/frontier.png" in text


def test_report_from_synthetic_metrics_has_every_section(tmp_path):
    records = []
    for method in ALL_METHODS:
        for seed in ([0] if method == "undefended" else [0, 1]):
            rec: dict[str, Any] = {"method": method, "label": method, "seed": seed, "sweep_param": None, "sweep_value": None,
                                   "eval_metrics": fake_eval_metrics(method, seed)}
            if seed == 0:
                folder = tmp_path / "analysis" / method
                folder.mkdir(parents=True)
                (folder / "pca.png").write_bytes(PNG)
                (folder / "curves-compare.png").write_bytes(PNG)
                rec.update(analysis=fake_analysis(method != "undefended"), analysis_dir=str(folder))
            records.append(rec)
    for value in (2.0, 20.0):
        records.append({"method": "mosr", "label": f"mosr alpha={value:g}", "seed": 0, "sweep_param": "alpha", "sweep_value": value,
                        "eval_metrics": fake_eval_metrics("rr" if value > 10 else "mosr", 3)})
    html_path = write_report(records, tmp_path / "report", title="synthetic", config={"model": "default", "eval": {"limit": 20}})
    md = (tmp_path / "report/report.md").read_text()
    for heading in ("## How to read this", "## Methods", "## Results", "### Safety vs over-refusal", "### Attack success per attack",
                    "### Over-refusal per set", "## Ablations", "## Sweep over alpha", "## Representations before and after", "## Reproduce"):
        assert heading in md, heading
    for name in ("MOSR without OALW", "RR (Circuit Breakers)", "DeRTa-style SFT", "Undefended"):
        assert name in md
    assert re.search(r"\d+\.\d ±\d+\.\d \[\d+\.\d–\d+\.\d\] n=40", md)  # mean ± sd [pooled 95% interval] n
    assert "prefill" in md and "or-bench-hard:test" in md
    html = html_path.read_text()
    assert html.startswith("<!DOCTYPE html>")
    images = re.findall(r'<img alt="[^"]*" src="([^"]+)"', html)
    assert len(images) >= 4 and all(src.startswith("data:image/png;base64,") for src in images)


def test_pooling_and_pareto_front():
    cell = combine([{"k": 2, "n": 10}, {"k": 6, "n": 10}, None])
    assert isinstance(cell, Cell)
    assert cell.pooled.k == 8 and cell.pooled.n == 20
    assert cell.mean == pytest.approx(0.4) and cell.sd == pytest.approx(0.2828427, rel=1e-5)
    assert combine([None]) is None
    # (over-refusal, safety): point 1 beats point 0 on both axes; 2 and 1 trade off
    assert non_dominated([(50, 50), (20, 80), (10, 60)]) == [2, 1]


def test_aggregate_groups_by_variant_in_order():
    recs = [{"method": m, "label": m, "seed": s, "eval_metrics": fake_eval_metrics(m, s)} for m in ("rr", "mosr") for s in (0, 1)]
    rows = aggregate(recs)
    assert [r.label for r in rows] == ["rr", "mosr"]
    assert rows[0].seeds == [0, 1] and rows[0].perplexity is not None


def test_eval_sets_restrict_the_tasks():
    from mosr.evaluation import EvalConfig

    cfg = EvalConfig(suites=["safety", "over-refusal"], sets=["xstest-safe", "jbb-harmful|prefill"], limit=2)
    assert [t.key for t in config_tasks(cfg)] == ["jbb-harmful|prefill", "xstest-safe|none"]
    assert all(len(task_samples(t, 2)) == 2 for t in config_tasks(cfg))


def test_quickstart_config_is_shipped_and_valid():
    from mosr.commands.quickstart import QUICKSTART_YAML, quickstart_config_path

    path = quickstart_config_path()
    assert path.read_text(encoding="utf-8") == QUICKSTART_YAML
    cfg = ExperimentConfig.load(path)
    assert {"undefended", "rr", "xboundary"} <= set(cfg.methods) and any(m.startswith("mosr") for m in cfg.methods)
    assert cfg.eval.get("limit")


def test_quickstart_trains_the_point_the_selection_rule_chose_for_each_method():
    """Each quickstart adapter is the single-run config of its method, ended at the step the selection
    rule chose on the :val frontiers, re-judged with today's default judge
    (results/frontier-2026-12-06/selection-round10.json, scripts/rejudge_frontiers.py; for MOSR the :val ablation's choice,
    results/ablations-val/chosen.json); only checkpointing differs."""
    from mosr.experiment import Variant, train_config
    from mosr.training.config import TrainConfig

    root = Path(__file__).resolve().parents[1]
    cfg = ExperimentConfig.load(root / "configs" / "quickstart.yaml")  # identical to the built-in one (test above)
    selection = json.loads((root / "results" / "frontier-2026-12-06" / "selection-round10.json").read_text())["frontiers"]
    ignore = ("checkpoint_every", "keep_checkpoints")
    mosr = json.loads((root / "results" / "ablations-val" / "chosen.json").read_text())  # the best MOSR variant (clause 3)
    trained = [m for m in cfg.methods if m != "undefended"]
    assert sorted(trained) == sorted(["rr", "xboundary", mosr["method"]])
    for method in trained:
        if method == mosr["method"]:  # a point of the :val ablation: configs/train-mosr.yaml and the variant's keys, 60 steps
            single, step = TrainConfig.load(root / "configs" / "train-mosr.yaml", mosr["sets"]), 60
        else:
            chosen = selection[f"results/frontier-2026-12-05/{method}/frontier.json"]
            assert chosen["config"] == f"configs/train-{method}.yaml" and not chosen["overrides"]
            single, step = TrainConfig.load(root / chosen["config"]), chosen["chosen_step"]
        want = {k: v for k, v in single.to_dict().items() if k not in ignore}
        want["stop_after"] = step if step < single.steps else None
        got = {k: v for k, v in train_config(cfg, Variant(method), seed=0).to_dict().items() if k not in ignore}
        assert got == want, method


def test_the_ablation_experiment_varies_one_key_of_the_paper_setting_per_row():
    from mosr.experiment import Variant, train_config
    from mosr.methods import VARIANTS
    from mosr.training.config import TrainConfig

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = ExperimentConfig.load(root / "experiment-ablations-val.yaml")
    ignore = ("checkpoint_every", "keep_checkpoints")
    paper = {k: v for k, v in TrainConfig.load(root / "train-mosr.yaml").to_dict().items() if k not in ignore}
    assert {k: v for k, v in train_config(cfg, Variant("mosr"), seed=0).to_dict().items() if k not in ignore} == paper
    assert set(cfg.methods) - {"mosr"} == set(VARIANTS)  # every option has its row
    for method in set(cfg.methods) - {"mosr"}:
        row = {k: v for k, v in train_config(cfg, Variant(method), seed=0).to_dict().items() if k not in ignore}
        assert {k for k in row if row[k] != paper[k]} == set(VARIANTS[method].overrides), method


def test_shipped_experiment_trains_rr_and_mosr_like_the_chosen_single_run_configs():
    from mosr.experiment import Variant, train_config
    from mosr.training.config import TrainConfig

    def settings(c: TrainConfig) -> dict[str, Any]:  # target layers as resolved on the 30-block default
        # leak_check_val: the experiment keeps the test-only leak check it started with (docs/EXPERIMENT.md)
        return {**c.to_dict(), "target_layers": c.resolved_target_layers(30), "leak_check_val": None}

    root = Path(__file__).resolve().parents[1] / "configs"
    cfg = ExperimentConfig.load(root / "experiment.yaml")
    for method in ("rr", "mosr"):
        assert settings(train_config(cfg, Variant(method), seed=0)) == settings(TrainConfig.load(root / f"train-{method}.yaml"))
    # the ablations differ from mosr only in their method
    mosr = train_config(cfg, Variant("mosr"), seed=0).to_dict()
    for method in ("mosr-no-oalw", "mosr-no-caa", "mosr-no-oalw-no-caa"):
        assert {k: v for k, v in train_config(cfg, Variant(method), seed=0).to_dict().items() if mosr[k] != v} == {"method": method}


def test_changing_the_judge_keeps_completions_for_rejudging(tmp_path):
    fakes = Fakes()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    kept = tmp_path / "exp/stages/eval/rr/seed0/completions.jsonl"
    kept.write_text('{"stored": true}\n')
    fakes.calls.clear()
    cfg = config(eval={"suites": ["safety", "over-refusal"], "sets": ["advbench:test", "xstest-safe"], "limit": 5, "judge": "gibberish"})
    run_experiment(cfg, tmp_path / "exp", runners=fakes.runners())
    assert fakes.count("train") == 0 and fakes.count("eval") == 3
    assert kept.read_text() == '{"stored": true}\n'  # the eval command re-judges what is stored
    fakes.calls.clear()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())  # back to the old judge: re-judged again
    assert fakes.count("eval") == 3 and kept.is_file()
    fakes.calls.clear()
    cfg = config(eval={"suites": ["safety", "over-refusal"], "sets": ["advbench:test", "xstest-safe"], "limit": 6, "judge": "keyword"})
    run_experiment(cfg, tmp_path / "exp", runners=fakes.runners())
    assert not kept.exists()  # other prompts: the folder is redone from scratch


def test_real_stage_commands_on_a_tiny_model(tmp_path):
    """The default runners call the real train, eval and analyze functions with the configs they expect."""
    from mosr.testing import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    cfg = ExperimentConfig.from_dict({
        "model": str(model), "methods": ["undefended", "rr"], "seeds": [0],
        "train": {"steps": 1, "batch_size": 1, "max_length": 32, "pair_datasets": ["derta"], "harmful_datasets": [], "max_pairs": 4,
                  "max_retain": 4, "checkpoint_every": 0, "leak_threshold": 1.0},
        "eval": {"suites": ["over-refusal"], "sets": ["xstest-safe"], "limit": 5, "max_new_tokens": 4, "judge": "keyword"},
        "analyze": {"limit": 5, "folds": 2, "k": 2, "pseudo": ["xstest-safe"], "benign": ["self-instruct:test"], "malicious": ["advbench:test"]},
    })
    result = run_experiment(cfg, tmp_path / "exp")
    assert [s.status for s in result.stages] == ["ran"] * 6
    assert (tmp_path / "exp/stages/train/rr/seed0/mosr_adapter.json").is_file()
    md = result.report_md.read_text()
    assert "RR (Circuit Breakers)" in md and "n=5" in md and "## Representations before and after" in md
    again = run_experiment(cfg, tmp_path / "exp")
    assert [s.status for s in again.stages] == ["cached"] * 6


def test_a_change_of_the_judges_rules_rejudges_cached_evaluations(tmp_path, monkeypatch):
    """Same judge name, new rules (an upgraded mosr): the eval stages run again on their stored
    completions, and nothing is trained again."""
    from mosr import judges, stage_inputs

    fakes = Fakes()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    kept = tmp_path / "exp/stages/eval/rr/seed0/completions.jsonl"
    kept.write_text('{"stored": true}\n')
    fakes.calls.clear()
    run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    assert fakes.count("eval") == 0  # same rules: cached
    monkeypatch.setattr(judges, "rules_fingerprint", lambda: "0123456789ab")
    stage_inputs.resolved_judge.cache_clear()
    try:
        run_experiment(config(), tmp_path / "exp", runners=fakes.runners())
    finally:
        stage_inputs.resolved_judge.cache_clear()
    assert fakes.count("train") == 0 and fakes.count("eval") == 3
    assert kept.read_text() == '{"stored": true}\n'


def test_rules_fingerprint_follows_the_rule_files(tmp_path, monkeypatch):
    from mosr import judges

    first = judges.rules_fingerprint()
    assert len(first) == 12 and first == judges.rules_fingerprint()
    keywords = tmp_path / "refusal_keywords.json"
    keywords.write_bytes(judges.KEYWORDS_FILE.read_bytes() + b" ")
    monkeypatch.setattr(judges, "KEYWORDS_FILE", keywords)
    judges.rules_fingerprint.cache_clear()
    try:
        assert judges.rules_fingerprint() != first
    finally:
        judges.rules_fingerprint.cache_clear()
