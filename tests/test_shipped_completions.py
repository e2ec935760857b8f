"""The own completions shipped for the embedded default model: used only when they match, recorded, optional."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import replace

import pytest

import mosr.generation
from mosr.data import Sample
from mosr.errors import TrainingError
from mosr.testing import tiny_model
from mosr.training import data as tdata


def _ship(root, loaded, samples, n, texts, **changes):
    path = root / tdata._completion_key(loaded, samples, n).with_suffix(".json.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"fingerprint": loaded.fingerprint, "max_new_tokens": n,
               "items": [{"id": s.id, "prompt": s.prompt, "completion": t} for s, t in zip(samples, texts)], **changes}
    path.write_bytes(gzip.compress(json.dumps(payload).encode()))
    return path


@pytest.fixture
def setup(tmp_path, monkeypatch, fake_generate):
    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOSR_SHIPPED_COMPLETIONS", raising=False)
    monkeypatch.setattr(tdata, "SHIPPED_COMPLETIONS", tmp_path / "shipped")
    calls = fake_generate
    loaded = tiny_model(num_layers=2)
    samples = [Sample(f"s{i}", f"prompt {i}", "benign", "toy") for i in range(3)]
    return tmp_path / "shipped", loaded, samples, calls


def _own(loaded, samples, n=5):
    return tdata.own_completions(loaded, samples, max_new_tokens=n, batch_size=2, desc="t")


def test_a_matching_shipped_file_replaces_generation_and_is_recorded(setup):
    shipped, loaded, samples, calls = setup
    _ship(shipped, loaded, samples, 5, ["a", "b", "c"])
    assert tdata.completion_origin(loaded, samples, 5) == "shipped"
    assert _own(loaded, samples) == ["a", "b", "c"] and calls == []
    cached = json.loads(tdata.completion_cache_path(loaded, samples, 5).read_text())
    assert cached["source"] == "shipped"  # copied into the cache, marked as shipped
    assert tdata.completion_origin(loaded, samples, 5) == "shipped" and _own(loaded, samples) == ["a", "b", "c"]
    more = [Sample("s9", "prompt 9", "benign", "toy")]
    _own(loaded, more)
    assert tdata.completion_origin(loaded, more, 5) == "cache" and len(calls) == 1  # generated earlier on this machine


def test_shipped_files_are_ignored_when_anything_differs(setup, monkeypatch):
    shipped, loaded, samples, calls = setup
    _ship(shipped, loaded, samples, 5, ["a", "b", "c"], fingerprint="gguf-sha256:another")  # another model's
    assert tdata.completion_origin(loaded, samples, 5) == "generated"
    assert _own(loaded, samples) == [f"answer to {s.prompt}" for s in samples] and len(calls) == 1
    assert _own(loaded, samples[:2]) and len(calls) == 2  # other prompts: other key, nothing shipped
    _ship(shipped, loaded, samples, 7, ["a", "b", "c"], max_new_tokens=6)  # the file's own budget disagrees
    assert _own(loaded, samples, n=7)[0].startswith("answer to") and len(calls) == 3
    other = tiny_model(num_layers=2, seed=1)
    _ship(shipped, other, samples, 5, ["x", "y", "z"])
    monkeypatch.setenv("MOSR_SHIPPED_COMPLETIONS", "0")  # switched off
    assert tdata.completion_origin(other, samples, 5) == "generated"
    assert _own(other, samples)[0].startswith("answer to") and len(calls) == 4


def test_a_shipped_file_with_an_adapter_attached_is_not_used(setup):
    shipped, loaded, samples, calls = setup
    _ship(shipped, loaded, samples, 5, ["a", "b", "c"])
    with pytest.raises(TrainingError, match="adapter"):
        _own(replace(loaded, adapter="some/adapter"), samples)


def test_an_unreadable_shipped_file_is_an_error_not_a_silent_regeneration(setup):
    shipped, loaded, samples, calls = setup
    path = _ship(shipped, loaded, samples, 5, ["a", "b", "c"])
    path.write_bytes(b"not gzip")
    with pytest.raises(TrainingError, match="MOSR_SHIPPED_COMPLETIONS=0"):
        _own(loaded, samples)
    assert calls == []


def test_the_shipped_files_are_the_default_models_and_keyed_by_their_prompts():
    from mosr.models import default_gguf_path, gguf_fingerprint

    fingerprint = gguf_fingerprint(default_gguf_path())
    files = sorted(tdata.SHIPPED_COMPLETIONS.glob("*/*.json.gz"))
    assert len(files) == 3
    for path in files:
        payload = json.loads(gzip.decompress(path.read_bytes()))
        assert payload["fingerprint"] == fingerprint and path.parent.name == tdata.model_key(fingerprint)
        prompts_key = hashlib.sha256("\n".join(i["prompt"] for i in payload["items"]).encode()).hexdigest()[:16]
        assert path.name == f"{prompts_key}-n{payload['max_new_tokens']}.json.gz"
        assert all(isinstance(i["completion"], str) for i in payload["items"])


@pytest.mark.real_model  # the default judge's MiniLM embedder sorts the answers
def test_the_default_training_sets_hit_the_shipped_files(monkeypatch, tmp_path):
    """If the default data, caps or leak check change, this fails: regenerate them (scripts/ship_own_completions.py)."""
    from mosr.models import default_gguf_path, gguf_fingerprint
    from mosr.training.config import TrainConfig

    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MOSR_SHIPPED_COMPLETIONS", raising=False)

    def refuse(*a, **k):
        raise AssertionError("generation must not run: the shipped completions should cover the default sets")

    monkeypatch.setattr(mosr.generation, "generate", refuse)
    loaded = replace(tiny_model(num_layers=2), fingerprint=gguf_fingerprint(default_gguf_path()))
    for method, extra in (("mosr", {}), ("xboundary", {"max_pseudo": None})):
        data = tdata.build_training_data(loaded, TrainConfig(method=method, **extra))
        assert data.summary["own_completions"] == {"harmful": "shipped", "pseudo": "shipped"}, method
