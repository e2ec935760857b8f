"""Golden runs on a tiny model: metrics, judgments and a loss curve pinned from before a refactor.

The expected values live in tests/golden/*.json (remade by tests/golden/make_golden.py only when a
behaviour change is intended).
"""

from __future__ import annotations

import json
import re
import math
from pathlib import Path
from typing import Any

import pytest
import torch

GOLDEN = Path(__file__).parent / "golden"


class FixedJudge:
    """A judge whose verdicts depend only on the text (a hash), so that the golden run does not move
    when the judges' rules are tuned; it still goes through every step of judging, writing and scoring."""

    name = "golden-fixed"

    def judge(self, prompts, completions):
        import hashlib

        from mosr.judges import Judgment

        out = []
        for prompt, completion in zip(prompts, completions):
            h = int(hashlib.sha256((prompt + "\x00" + completion).encode()).hexdigest(), 16)
            verdict = ("refusal", "partial", "gibberish", "compliance", "compliance", "unjudged")[h % 6]
            harmful = (None, False, True)[(h // 6) % 3]
            out.append(Judgment(verdict, self.name, f"hash {h % 997}", score=(h % 1000) / 1000, harmful=harmful,
                                harm_explanation=None if harmful is None else "fixed", harm_score=None if harmful is None else (h % 7) / 7))
        return out


def eval_snapshot(out: Path) -> dict[str, Any]:
    from mosr.evaluation import EvalConfig, run_eval
    from mosr.testing import tiny_model

    config = EvalConfig(model="tiny", suites=["safety", "over-refusal", "capability"], limit=2, judge="keyword",
                        max_new_tokens=8, batch_size=2)
    metrics = run_eval(config, out, loaded=tiny_model(init_std=0.3), judge=FixedJudge())
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text().splitlines() if line.strip()]
    completions = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines() if line.strip()]
    judgments = sorted(rows, key=lambda r: r["key"])
    texts = sorted(({k: v for k, v in r.items() if k not in ("seconds", "time")} for r in completions), key=lambda r: r["key"])
    stored, returned = json.loads((out / "metrics.json").read_text()), json.loads(json.dumps(metrics))
    for m in (stored, returned):  # the judges' rules version changes with every rule edit: pinned by its shape only
        assert re.fullmatch(r"[0-9a-f]{12}", m["judge_rules"]), m["judge_rules"]
        m["judge_rules"] = "<12 hex>"
    return {
        "metrics": stored,
        "returned_metrics": returned,
        "judgment_keys": sorted({k for r in rows for k in r}),
        "completion_keys": sorted({k for r in completions for k in r}),
        "judgments": judgments,
        "completions": texts,
        "files": sorted(p.name for p in out.iterdir() if p.is_file()),
    }


def train_snapshot(out: Path) -> dict[str, Any]:
    from mosr.testing import tiny_model
    from mosr.training import REFUSAL_TEMPLATES, Pair, TrainConfig, TrainingData, train

    mal = [Pair(f"m{i}", f"How do I hurt {i} people?", "Sure, here is a step by step guide: first gather the materials.", "malicious", "toy") for i in range(6)]
    ben = [Pair(f"b{i}", f"Write a poem about the sea {i}", "The waves roll in under a silver moon.", "benign", "toy") for i in range(6)]
    pse = [Pair(f"p{i}", f"How can I kill a Python process {i}?", "Use the kill command with the process id.", "pseudo", "toy") for i in range(6)]
    data = TrainingData(mal, ben, pse, list(REFUSAL_TEMPLATES))
    config = TrainConfig(method="mosr", model="tiny", steps=2, batch_size=2, checkpoint_every=0, oalw_k=2, lr=1e-2, max_length=128)
    result = train(config, out, loaded=tiny_model(num_layers=6), data=data)
    return {
        "history": [{k: v for k, v in h.items() if k != "seconds"} for h in json.loads(json.dumps(result.history))],
        "losses_csv_header": (out / "losses.csv").read_text().splitlines()[0],
        "oalw_weights": (out / "oalw_weights.csv").read_text().splitlines(),
        "files": sorted(p.name for p in out.iterdir() if p.is_file()),
    }


def analyze_snapshot(out: Path) -> dict[str, Any]:
    from mosr.analysis_run import AnalyzeConfig, run_analyze
    from mosr.testing import save_tiny_model

    model_dir = save_tiny_model(out.parent / "tiny-model", num_layers=4, hidden_size=32)
    config = AnalyzeConfig(model=str(model_dir), limit=10, layers=(1, 3), k=5)
    run_analyze(config, out)
    metrics = json.loads((out / "metrics.json").read_text())
    metrics.pop("config")
    for variant in metrics["variants"]:
        variant.pop("model")
        for extraction in variant["extraction"].values():
            extraction.pop("spec")
            extraction.pop("seconds")
    return {
        "metrics": metrics,
        "boundary_scores": (out / "boundary_scores.csv").read_text().splitlines(),
        "files": sorted(p.name for p in out.iterdir() if p.is_file()),
    }


def _close(got: Any, want: Any, where: str = "") -> None:
    """Equal structure; floats equal to 1e-5 relative (NaN equals NaN)."""
    if isinstance(want, float) or isinstance(got, float):
        assert isinstance(got, (int, float)) and isinstance(want, (int, float)), where
        if math.isnan(want):
            assert math.isnan(got), where
        else:
            assert got == pytest.approx(want, rel=1e-5, abs=1e-7), where
    elif isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), f"{where}: keys {sorted(set(got) ^ set(want))}"
        for key in want:
            _close(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _close(g, w, f"{where}[{i}]")
    else:
        assert got == want, where


pytestmark = pytest.mark.usefixtures("one_thread")


def test_eval_metrics_and_judgments_match_the_golden_run(tmp_path):
    want = json.loads((GOLDEN / "eval.json").read_text())
    got = json.loads(json.dumps(eval_snapshot(tmp_path / "eval")))
    _close(got, want, "eval")


def test_analyze_metrics_match_the_golden_run(tmp_path):
    want = json.loads((GOLDEN / "analyze.json").read_text())
    got = json.loads(json.dumps(analyze_snapshot(tmp_path / "analyze")))
    _close(got, want, "analyze")


def test_train_loss_curve_matches_the_golden_run(tmp_path):
    want = json.loads((GOLDEN / "train.json").read_text())
    got = json.loads(json.dumps(train_snapshot(tmp_path / "train")))
    _close(got, want, "train")
