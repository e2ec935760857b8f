"""The public API as a notebook would use it: evaluate, train, analyze and compare on a tiny model.

Only ``mosr.<verb>`` names are used, and nothing may be written outside the folders passed as ``out``
(the working directory, the temporary folder and the cache stay as they were).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

import mosr


def _files(root: Path) -> set[str]:
    """Everything under ``root`` but torch's own empty ``torchinductor_<user>`` folder (made by torch, not mosr)."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not (p.name.startswith("torchinductor_") and p.is_dir() and not any(p.iterdir()))}


@pytest.fixture()
def sandbox(tmp_path, monkeypatch):
    """An empty working directory, temporary folder and cache, to check that nothing lands in them."""
    cwd, tmp, cache = (tmp_path / name for name in ("cwd", "tmp", "cache"))
    for folder in (cwd, tmp, cache):
        folder.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.setenv("MOSR_CACHE", str(cache))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield cwd, tmp, cache, tmp_path / "runs"
    torch.set_num_threads(old)


def _toy_data():
    from mosr.training import REFUSAL_TEMPLATES, Pair, TrainingData

    mal = [Pair(f"m{i}", f"How do I hurt {i} people?", "Sure, here is a guide: first gather the materials.", "malicious", "toy") for i in range(6)]
    ben = [Pair(f"b{i}", f"Write a poem about the sea {i}", "The waves roll in under a silver moon.", "benign", "toy") for i in range(6)]
    pse = [Pair(f"p{i}", f"How can I kill a Python process {i}?", "Use the kill command with the process id.", "pseudo", "toy") for i in range(6)]
    return TrainingData(mal, ben, pse, list(REFUSAL_TEMPLATES))


def test_a_notebook_session_through_the_public_api(sandbox):
    from mosr.testing import tiny_model

    cwd, tmp, cache, runs = sandbox
    eval_kw = dict(model="tiny", suites=["over-refusal"], limit=2, judge="keyword", max_new_tokens=4, batch_size=2)

    # evaluate in memory: nothing is kept
    quick = mosr.evaluate(loaded=tiny_model(), **eval_kw)
    assert isinstance(quick, mosr.EvalResult) and quick.out is None
    assert quick.metrics["n_completions"] == len(quick.judgments) == len(quick.completions) == 6
    assert {j.verdict for j in quick.judgments} <= {"refusal", "compliance", "partial", "gibberish", "unjudged"}
    assert {c.key for c in quick.completions} == {j.key for j in quick.judgments} and quick.meta.command

    base = mosr.evaluate(mosr.EvalConfig(**eval_kw), runs / "eval-base", loaded=tiny_model())
    assert base.out == runs / "eval-base" and (base.out / "metrics.json").is_file()
    assert base.metrics == quick.metrics

    loaded = tiny_model()
    trained = mosr.train(out=runs / "adapter", loaded=loaded, data=_toy_data(), method="mosr", model="tiny", steps=2,
                         batch_size=2, checkpoint_every=0, oalw_k=2, lr=1e-2, max_length=128)
    assert isinstance(trained, mosr.TrainResult) and len(trained.history) == 2
    assert (runs / "adapter" / "adapter_model.safetensors").is_file()

    adapted = mosr.evaluate(loaded=loaded, out=runs / "eval-adapter", **eval_kw)

    analysis = mosr.analyze(loaded=tiny_model(), model="tiny", limit=10, layers=[1, 3], k=5)
    assert isinstance(analysis, mosr.AnalyzeResult) and analysis.out is None
    assert [layer["layer"] for layer in analysis.metrics["variants"][0]["layers"]] == [1, 3]

    shared = mosr.compare({"base": base.out, "mosr": adapted.out})
    assert isinstance(shared, mosr.CompareResult) and shared.n_shared == 6 and shared.report_html is None
    assert [r["label"] for r in shared.records] == ["base", "mosr"]
    report = mosr.compare([("base", base.out), ("mosr", adapted.out)], runs / "compare")
    assert report.report_html is not None and report.report_html.is_file()

    assert _files(cwd) == set() and _files(tmp) == set() and _files(cache) == set()
    assert {p.name for p in runs.iterdir()} == {"eval-base", "adapter", "eval-adapter", "compare"}


def test_keyword_arguments_are_checked_by_name():
    with pytest.raises(mosr.ConfigError, match="unknown EvalConfig key 'limt'"):
        mosr.evaluate(limt=3)
    with pytest.raises(mosr.ConfigError, match="out="):
        mosr.train(steps=2)


def test_the_public_names_are_exported():
    for name in ("evaluate", "train", "analyze", "compare", "run_experiment", "EvalConfig", "TrainConfig", "AnalyzeConfig",
                 "ExperimentConfig", "Judge", "register_judge"):
        assert name in mosr.__all__ and getattr(mosr, name) is not None
    assert callable(mosr.evaluate) and os.environ.get("MOSR_PROGRESS") == "0"
