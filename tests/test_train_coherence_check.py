"""scripts/train_coherence_check.py --hold-out / --out-dir: a fit that leaves a labelled part out and
writes beside the shipped weights, never over them."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from mosr.judges.coherence import COHERENCE_META, COHERENCE_WEIGHTS, CoherenceCheck

from conftest import load_script


class FakeEmbedder:
    """Unit vectors from a hash of the text: no model download, deterministic."""

    sha256 = "0" * 64
    model = SimpleNamespace(config=SimpleNamespace(hidden_size=384))

    def embed(self, texts, max_tokens=None, desc=None):
        out = np.stack([np.random.default_rng(abs(hash(t)) % 2**32).standard_normal(384) for t in texts]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def _rows():
    rows = []
    for part in ("judge-train", "judge-test-2", "judge-test-3"):
        for i in range(30):
            loop = i % 3 == 0
            rows.append({"judge_split": part, "source": "rr" if i % 2 else "mosr", "request": f"request {part} {i}",
                         "completion": f"Blue river chair sings quietly under the {i} morning lamp of {part}." if loop
                         else f"Paris is the capital of France, answer {part} {i}.",
                         "label": "gibberish" if loop else "compliance"})
    return rows


def test_a_held_out_part_is_left_out_of_the_fit_and_the_weights_go_to_the_out_dir(monkeypatch, tmp_path):
    mod = load_script("train_coherence_check")
    monkeypatch.setattr(mod, "load_set", lambda part=None: _rows())
    monkeypatch.setattr(mod, "get_embedder", FakeEmbedder)
    monkeypatch.setattr(mod, "label_hashes", lambda: {"labels.jsonl": "test"})
    shipped = COHERENCE_WEIGHTS.read_bytes(), COHERENCE_META.read_bytes()

    assert mod.main(["--hold-out", "judge-test-3", "--out-dir", str(tmp_path / "fit")]) == 0

    meta = json.loads((tmp_path / "fit" / COHERENCE_META.name).read_text(encoding="utf-8"))
    assert meta["data"]["parts"] == ["judge-test-2", "judge-train"]
    assert meta["data"]["held_out"] == ["judge-test-3"]
    assert meta["data"]["rows"] == 60
    assert (COHERENCE_WEIGHTS.read_bytes(), COHERENCE_META.read_bytes()) == shipped
    check = CoherenceCheck(weights=tmp_path / "fit" / COHERENCE_WEIGHTS.name, meta_path=tmp_path / "fit" / COHERENCE_META.name)
    assert check.threshold == meta["threshold"]


def test_holding_out_a_part_that_is_not_there_is_an_error(monkeypatch, tmp_path, capsys):
    mod = load_script("train_coherence_check")
    monkeypatch.setattr(mod, "load_set", lambda part=None: _rows())
    with pytest.raises(SystemExit):
        mod.main(["--hold-out", "judge-test-33", "--out-dir", str(tmp_path)])
    assert "no such labelled part" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
