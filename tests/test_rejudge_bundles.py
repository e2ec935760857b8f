"""scripts/rejudge_bundles.py: eval bundles judged again in place, the files kept beside them untouched."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest

from mosr.bundles import verify_bundle
from mosr.judges import Judgment, KeywordJudge

from conftest import load_script
from test_bundles import tiny_run  # noqa: F401 - the tiny experiment's bundles, built once per module

NEW_RULES = "0123456789ab"


@pytest.fixture()
def script(monkeypatch):
    """The script, with a new rules version whose keyword judge calls every completion compliance."""
    import mosr.evaluation as evaluation

    mod = load_script("rejudge_bundles")
    monkeypatch.setattr(mod, "rules_fingerprint", lambda: NEW_RULES)
    monkeypatch.setattr(evaluation, "rules_fingerprint", lambda: NEW_RULES)
    monkeypatch.setattr(KeywordJudge, "judge", lambda self, prompts, completions: [Judgment("compliance", "keyword", "new rules")
                                                                                   for _ in completions])
    return mod


def _judgments(bundle: Path) -> list[dict]:
    return [json.loads(line) for line in gzip.open(bundle / "judgments.jsonl.gz", "rt", encoding="utf-8")]


def _verified(bundle: Path, tmp: Path) -> dict:
    """verify_bundle on a copy without the files kept beside the bundle (a bundle holds only what it lists)."""
    listed = {f["stored"] for f in json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))["files"]}
    clean = tmp / "clean"
    shutil.rmtree(clean, ignore_errors=True)
    shutil.copytree(bundle, clean, ignore=lambda _, names: [n for n in names if n not in listed | {"bundle.json"}])
    return verify_bundle(clean)


def test_a_bundle_is_judged_again_in_place_and_the_files_beside_it_stay(tiny_run, tmp_path, script, capsys):  # noqa: F811
    bundle = tmp_path / "results" / "rr" / "seed0"
    shutil.copytree(tiny_run["bundles"] / "eval/rr/seed0", bundle)
    (bundle / "losses.csv").write_text("step,loss\n1,0.5\n", encoding="utf-8")
    before = _judgments(bundle)
    assert any(j["verdict"] != "compliance" for j in before)  # so that the new rules move something

    assert script.main([str(tmp_path / "results"), "--work", str(tmp_path / "work"), "--judge", "keyword"]) == 0
    after = _judgments(bundle)
    assert [j["key"] for j in after] == [j["key"] for j in before]
    assert {j["verdict"] for j in after} == {"compliance"}
    assert (bundle / "losses.csv").read_text(encoding="utf-8") == "step,loss\n1,0.5\n"
    assert not (tmp_path / "results" / "rr" / "seed0.rejudged").exists()
    _verified(bundle, tmp_path)
    metrics = json.loads(gzip.open(bundle / "metrics.json.gz", "rt", encoding="utf-8").read()) if (bundle / "metrics.json.gz").exists() \
        else json.loads((bundle / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["judge_rules"] == NEW_RULES
    moved = sum(j["verdict"] != "compliance" for j in before)
    assert f"{moved} verdicts" in capsys.readouterr().out

    # a second pass finds the bundle judged with today's rules and leaves it alone
    snapshot = {p.name: p.read_bytes() for p in bundle.iterdir()}
    assert script.main([str(tmp_path / "results"), "--work", str(tmp_path / "work"), "--judge", "keyword"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == snapshot


def test_no_eval_bundle_below_the_roots_is_an_error(tmp_path, script):
    (tmp_path / "empty").mkdir()
    assert script.main([str(tmp_path / "empty")]) == 1
