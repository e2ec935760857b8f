"""Boundary metrics on hand-computed examples, planted directions, and `mosr analyze` end to end on a tiny model."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mosr.analysis import (
    AnalysisConfig,
    analyze_layer,
    analyze_layers,
    auroc,
    auroc_interval,
    boundary_closeness,
    centroid_ratio,
    difference_in_means,
    knn_malicious_share,
    wilson_interval,
)
from mosr.errors import ConfigError, DataError
from mosr.report_html import markdown_table, markdown_to_html


# ------------------------------------------------------------------------------ hand-computed values
def test_centroid_ratio_by_hand():
    mu_b, mu_m = np.array([0.0, 0.0]), np.array([4.0, 0.0])
    x = np.array([[1.0, 0.0], [2.0, 2.0], [0.0, 3.0], [0.0, 0.0], [4.0, 0.0]])
    # d_b, d_m: (1, 3) -> 1/4; (√8, √8) -> 1/2; (3, 5) -> 3/8; at mu_b -> 0; at mu_m -> 1
    np.testing.assert_allclose(centroid_ratio(x, mu_b, mu_m), [0.25, 0.5, 0.375, 0.0, 1.0])
    assert centroid_ratio(np.zeros((1, 2)), np.zeros(2), np.zeros(2))[0] == 0.5


def test_knn_share_by_hand():
    ref = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])
    is_mal = np.array([False, False, True, True, True])
    # x=0.4: nearest 3 are 0, 1, 2 -> 1/3 malicious; x=9: 10, 11, 2 -> 3/3; x=1.6 with k=2: 2, 1 -> 1/2
    np.testing.assert_allclose(knn_malicious_share(np.array([[0.4], [9.0]]), ref, is_mal, 3), [1 / 3, 1.0])
    np.testing.assert_allclose(knn_malicious_share(np.array([[1.6]]), ref, is_mal, 2), [0.5])
    with pytest.raises(ConfigError, match="k must be"):
        knn_malicious_share(np.array([[0.0]]), ref, is_mal, 6)


def test_boundary_closeness_and_auroc_by_hand():
    np.testing.assert_allclose(boundary_closeness(np.array([0.5, 0.9, 0.0, 0.25])), [1.0, 0.2, 0.0, 0.5])
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert auroc(scores, labels) == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered right
    assert auroc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5  # a tie counts one half
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=60), rng.random(60) < 0.4
    assert auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert math.isnan(auroc(s, np.zeros(60, bool)))
    lo, hi = auroc_interval(s + 2 * y, y, n_boot=300)
    assert lo < auroc(s + 2 * y, y) < hi


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.49, 0.943)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


# ------------------------------------------------------------------------------- planted directions
def _planted(n: int = 80, dim: int = 40, strength: float = 4.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    u = rng.normal(size=dim)
    u /= np.linalg.norm(u)
    benign = rng.normal(size=(n, dim)) - strength / 2 * u
    malicious = rng.normal(size=(n, dim)) + strength / 2 * u
    return u, benign, malicious, rng


def test_planted_direction_is_recovered():
    u, benign, malicious, rng = _planted()
    assert float(difference_in_means(benign, malicious) @ u) > 0.9
    res = analyze_layer(benign, malicious, {}, config=AnalysisConfig(folds=5))
    assert res.probe_accuracy > 0.9
    assert res.probe_interval[0] < res.probe_accuracy < res.probe_interval[1]
    noise = analyze_layer(rng.normal(size=(80, 40)), rng.normal(size=(80, 40)), {})
    assert 0.3 < noise.probe_accuracy < 0.7  # no planted signal: near chance


def test_pseudo_on_the_boundary_and_auroc():
    u, benign, malicious, rng = _planted(strength=6.0)
    # pseudo prompts straddle the midpoint; the "refused" ones are shifted towards the malicious side
    offsets = np.r_[np.full(30, 1.0), np.full(30, -1.0)]
    pseudo = rng.normal(size=(60, 40)) + offsets[:, None] * u
    outcome = ["refused"] * 30 + ["answered"] * 28 + ["unjudged", "unknown"]
    stack = lambda a: a[:, None, :]  # noqa: E731 - one layer
    _, summaries = analyze_layers({"benign": stack(benign), "malicious": stack(malicious), "pseudo": stack(pseudo)}, [7], outcome=outcome)
    s = summaries[0]
    assert s["layer"] == 7
    g = s["groups"]
    ratio = {name: g[name]["centroid_ratio"]["mean"] for name in g}
    # noise in the other 39 dimensions pulls every ratio towards 0.5, but the order is kept
    assert ratio["benign"] < ratio["pseudo-answered"] < ratio["pseudo"] < ratio["pseudo-refused"] < ratio["malicious"]
    assert abs(ratio["pseudo"] - 0.5) < 0.05
    assert g["pseudo"]["probe_p"]["mean"] == pytest.approx(0.5, abs=0.25)
    assert g["pseudo-refused"]["n"] == 30 and g["pseudo-answered"]["n"] == 28  # unjudged / unknown not assigned
    assert s["auroc"]["n_refused"] == 30 and s["auroc"]["n_answered"] == 28
    assert s["auroc"]["centroid_ratio"]["auroc"] > 0.75  # ideal: Φ(√2) ≈ 0.92
    assert s["auroc"]["probe_p"]["auroc"] > 0.75


def test_empty_or_tiny_group_is_a_clear_error():
    _, benign, malicious, _ = _planted(n=10)
    with pytest.raises(DataError, match="pseudo group is empty"):
        analyze_layers({"benign": benign[:, None], "malicious": malicious[:, None], "pseudo": np.zeros((0, 1, 40))}, [0])
    with pytest.raises(DataError, match="benign group has 3 prompts"):
        analyze_layer(benign[:3], malicious, {})
    with pytest.raises(ConfigError, match="folds"):
        AnalysisConfig(folds=1)


# ---------------------------------------------------------------------------------------- html
def test_markdown_to_html_embeds_images(tmp_path):
    from mosr.plots import bar_chart, save_figure

    save_figure(bar_chart(["a", "b"], {"x": [0.2, 0.5]}, lo={"x": [0.1, 0.4]}, hi={"x": [0.3, 0.6]}, title="t"), tmp_path / "f.png")
    md = "# Title\n\nSome **bold** and `code`.\n\n" + markdown_table(["k", "v"], [["a|b", 1]]) + "\n\n- item\n\n![fig](f.png)\n"
    page = markdown_to_html(md, base_dir=tmp_path)
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page and "<code>code</code>" in page
    assert "<td>a|b</td>" in page and "<li>item</li>" in page
    assert 'src="data:image/png;base64,iVBOR' in page and "f.png" not in page.split("<body>")[1].replace('alt="fig"', "")


# ------------------------------------------------------------------------------- CLI on a tiny model
@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """A tiny model folder, a random LoRA adapter for it, and a synthetic eval run."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from mosr.data import load_dataset
    from mosr.testing import save_tiny_model

    root = tmp_path_factory.mktemp("analyze")
    model_dir = save_tiny_model(root / "tiny", num_layers=4, hidden_size=32)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir))
    torch.manual_seed(1)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).save_pretrained(str(root / "adapter"))
    run = root / "evalrun"
    run.mkdir()
    records = []
    for spec in ("or-bench-hard:test", "xstest-safe"):
        for i, s in enumerate(load_dataset(spec, limit=8)):
            verdict = ["refusal", "compliance", "gibberish", "compliance", "unjudged"][i % 5]
            records.append({"dataset": spec, "attack": "none", "sample_id": s.id, "verdict": verdict})
            records.append({"dataset": spec, "attack": "prefill", "sample_id": s.id, "verdict": "compliance"})
    (run / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return root, model_dir, root / "adapter", run


def _args(**kw) -> list[str]:
    argv = ["analyze"]
    for key, value in kw.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *map(str, value)]
        else:
            argv += [flag, str(value)]
    return argv


def test_analyze_end_to_end_with_adapter_and_eval_run(tiny_setup, monkeypatch):
    from mosr.cli import main

    monkeypatch.setenv("MOSR_PROGRESS", "0")
    root, model_dir, adapter, run = tiny_setup
    out = root / "out"
    code = main(_args(model=model_dir, adapter=adapter, eval_run=run, limit=10, layers=["3"], k=5, out=out))
    assert code == 0
    for name in ("metrics.json", "boundary_scores.csv", "report.md", "report.html", "run.json", "pca.png", "probe-scores.png",
                 "curves-base.png", "curves-base-adapter.png", "curves-compare.png"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert [v["name"] for v in m["variants"]] == ["base", "base+adapter"]
    outcomes = m["pseudo_outcomes"]
    assert sum(outcomes.values()) == 10 and set(outcomes) <= {"refused", "answered", "unjudged"}
    judged = {(r["dataset"], r["sample_id"]): r["verdict"] for r in map(json.loads, (run / "judgments.jsonl").read_text().splitlines())
              if r["attack"] == "none"}
    table = list(csv.reader(io.StringIO((out / "boundary_scores.csv").read_text())))[1:]
    pseudo_rows = [r for r in table if r[0] == "base" and r[2] == "pseudo"]
    assert all(judged[(r[3], r[4])] == r[5] for r in pseudo_rows)  # each prompt carries its own verdict
    assert sum(r[6] == "refused" for r in pseudo_rows) == outcomes["refused"]
    assert sum(r[6] == "unjudged" for r in pseudo_rows) == outcomes["unjudged"] > 0
    assert m["eval_run"]["attack_records_ignored"] == 16
    base, adapted = (np.array([x["groups"]["pseudo"]["probe_p"]["mean"] for x in v["layers"]]) for v in m["variants"])
    assert not np.allclose(base, adapted)  # the adapter changes the representations
    layer = m["variants"][0]["layers"][0]
    assert layer["layer"] == 3 and "auroc" in layer and layer["auroc"]["n_refused"] == outcomes["refused"]
    assert {k: d["n"] for k, d in layer["pseudo_by_dataset"].items()} == {"or-bench-hard:test": 5, "xstest-safe": 5}
    assert len(table) == 2 * 1 * (10 + 10 + 10)  # variants x layers x prompts
    assert "unjudged" in (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "<table>" in html
    assert len(list((out / "representations").glob("*.npy"))) == 2 * 3  # variants x groups


def test_analyze_errors_are_one_line(tiny_setup, capsys, monkeypatch):
    from mosr.cli import main
    from mosr.analysis_run import parse_layers

    monkeypatch.setenv("MOSR_PROGRESS", "0")
    root, model_dir, _, run = tiny_setup
    assert main(_args(model=model_dir, layers=["7"], limit=8, out=root / "bad1")) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: layer 7 is out of range") and "\n" not in err
    assert main(_args(model=model_dir, eval_run=run, pseudo=["jbb-benign"], limit=8, out=root / "bad2")) == 2
    err = capsys.readouterr().err.strip()
    assert "no plain-prompt judgments for jbb-benign" in err and "\n" not in err
    assert main(_args(model=model_dir, benign=[str(root / "missing.jsonl")], limit=8, out=root / "bad3")) == 2
    assert "not found" in capsys.readouterr().err
    assert parse_layers(["0-2", "5,7", "-1"]) == (0, 1, 2, 5, 7, -1) and parse_layers(["all"]) is None
    with pytest.raises(ConfigError, match="bad layer"):
        parse_layers(["x"])
    with pytest.raises(ConfigError, match="no dataset"):
        from mosr.analysis_run import AnalyzeConfig

        AnalyzeConfig(benign=())
    with pytest.raises(SystemExit):  # argparse rejects an unknown pooling
        main(["analyze", "--pooling", "max", "--out", str(root / "bad4")])
