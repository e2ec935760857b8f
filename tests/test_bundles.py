"""Result bundles: export and verification, and an experiment run in pieces and rebuilt from its bundles.

One real experiment on a tiny random model (train, eval, analyze, report) exports its bundles once
for the module; the tests then rebuild, re-judge and compare from copies of those bundles with every
command that would train, generate or extract patched to fail. The shard and ``--only`` tests use the
fake stage commands of ``test_experiment`` (seconds).
"""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mosr.bundles import BUNDLE_FILE, export_bundle, unpack_bundle, verify_bundle
from mosr.cli import main
from mosr.comparison import shared_records
from mosr.errors import ConfigError, DataError, RunError
from mosr.experiment import ExperimentConfig, Runners, build_plan, run_experiment
from mosr.experiment_pieces import parse_shard, select

from test_experiment import Fakes, config

TINY: dict[str, Any] = {
    "methods": ["undefended", "rr"], "seeds": [0],
    "train": {"steps": 1, "batch_size": 1, "max_length": 32, "pair_datasets": ["derta"], "harmful_datasets": [], "max_pairs": 4,
              "max_retain": 4, "checkpoint_every": 0, "leak_threshold": 1.0},
    "eval": {"suites": ["over-refusal"], "sets": ["xstest-safe"], "limit": 5, "max_new_tokens": 6, "judge": "keyword"},
    "analyze": {"limit": 5, "folds": 2, "k": 2, "pseudo": ["xstest-safe"], "benign": ["self-instruct:test"], "malicious": ["advbench:test"]},
}
BUNDLED = {"train/rr/seed0", "eval/undefended/seed0", "eval/rr/seed0", "analyze/undefended/seed0", "analyze/rr/seed0"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict[str, Any]:
    """The tiny experiment, run once with a bundles folder; tests copy the bundles before changing anything."""
    import torch

    from mosr.testing import save_tiny_model

    base = tmp_path_factory.mktemp("tiny-experiment")
    model = save_tiny_model(base / "tiny", init_std=0.3)  # varied completions, not one repeated token
    data = {**TINY, "model": str(model), "bundles": str(base / "bundles")}
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = run_experiment(ExperimentConfig.from_dict(data), base / "exp")
    finally:
        torch.set_num_threads(old)
    assert all(s.status == "ran" for s in result.stages)
    return {"data": data, "out": base / "exp", "bundles": base / "bundles", "base": base}


@pytest.fixture()
def no_model_work(monkeypatch) -> None:
    """Every entry point that trains, generates, extracts or judges in an experiment fails the test if called."""
    import mosr.experiment as experiment

    def forbidden(what: str):
        def fail(*_: Any, **__: Any) -> None:
            raise AssertionError(f"{what} was called")
        return fail

    for name in ("train", "run_eval", "run_analyze", "finish_run"):
        monkeypatch.setattr(experiment, name, forbidden(name))
    import mosr.evaluation as evaluation
    import mosr.generation as generation

    monkeypatch.setattr(evaluation, "generate", forbidden("generate"))
    monkeypatch.setattr(generation, "generate", forbidden("generate"))


def _copy_bundles(tiny_run: dict[str, Any], dest: Path) -> Path:
    shutil.copytree(tiny_run["bundles"], dest)
    return dest


def _rows(out: Path) -> list[dict[str, Any]]:
    return json.loads((out / "report/summary.json").read_text())["rows"]


def _statuses(out: Path) -> dict[str, str]:
    return {s["name"]: s["status"] for s in json.loads((out / "results.json").read_text())["stages"]}


def _bundle_dirs(root: Path) -> set[str]:
    return {str(p.parent.relative_to(root)) for p in root.rglob(BUNDLE_FILE)}


# ------------------------------------------------------------------------------------------- export
def test_every_stage_is_bundled_without_weights_and_verifies(tiny_run):
    bundles, out = tiny_run["bundles"], tiny_run["out"]
    assert _bundle_dirs(bundles) == BUNDLED
    assert (out / "stages/train/rr/seed0/adapter_model.safetensors").is_file()  # the weights exist, and stay out
    names = {p.name for p in bundles.rglob("*")}
    assert not [n for n in names if n.endswith((".safetensors", ".bin", ".pt", ".npy")) or n in ("checkpoints", "cache")]
    for name in BUNDLED:
        info = verify_bundle(bundles / name)
        stage = out / "stages" / name
        assert info["stage"]["hash"] == (stage / "DONE").read_text().strip()
        assert info["kind"] == name.split("/")[0]
    ev = bundles / "eval/rr/seed0"
    stored = {p.name for p in ev.iterdir()}
    assert {"completions.jsonl.gz", "judgments.jsonl.gz", "metrics.json", "run.json", BUNDLE_FILE} <= stored
    assert gzip.decompress((ev / "completions.jsonl.gz").read_bytes()) == (out / "stages/eval/rr/seed0/completions.jsonl").read_bytes()
    assert sum(p.stat().st_size for p in bundles.rglob("*") if p.is_file()) < 1_000_000


def test_unpacking_gives_back_the_exported_files(tiny_run, tmp_path):
    stage = tiny_run["out"] / "stages/eval/rr/seed0"
    bundle = export_bundle(stage, tmp_path / "bundle")
    info = unpack_bundle(bundle, tmp_path / "run")
    assert {f["name"] for f in info["files"]} == {p.name for p in (tmp_path / "run").iterdir()}
    for f in info["files"]:
        assert (tmp_path / "run" / f["name"]).read_bytes() == (stage / f["name"]).read_bytes()
    assert export_bundle(stage, tmp_path / "bundle") == bundle and verify_bundle(bundle)  # exporting again replaces it


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, match", [
    (lambda b: _flip_a_byte(b / "judgments.jsonl.gz"), "judgments.jsonl.gz was changed after export"),
    (lambda b: (b / "completions.jsonl.gz").unlink(), "completions.jsonl.gz is missing"),
    (lambda b: (b / "notes.txt").write_text("hello"), "notes.txt not listed"),
    (lambda b: (b / "summary.md").write_text("# other numbers\n"), "summary.md was changed"),
])
def test_a_changed_bundle_is_refused(tiny_run, tmp_path, damage, match):
    bundle = shutil.copytree(tiny_run["bundles"] / "eval/rr/seed0", tmp_path / "bundle")
    verify_bundle(bundle)
    damage(bundle)
    with pytest.raises(RunError, match=match):
        verify_bundle(bundle)
    with pytest.raises(RunError, match=match):
        unpack_bundle(bundle, tmp_path / "run")


def test_content_that_does_not_match_its_recorded_hash_is_refused(tiny_run, tmp_path):
    bundle = shutil.copytree(tiny_run["bundles"] / "eval/rr/seed0", tmp_path / "bundle")
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    next(f for f in info["files"] if f["name"] == "judgments.jsonl")["sha256"] = "0" * 64
    (bundle / BUNDLE_FILE).write_text(json.dumps(info))
    with pytest.raises(RunError, match="does not unpack to the file that was exported"):
        unpack_bundle(bundle, tmp_path / "run")


def test_a_file_that_inflates_past_its_recorded_size_is_refused(tiny_run, tmp_path):
    import hashlib

    bundle = tmp_path / "b"
    shutil.copytree(tiny_run["bundles"] / "eval/rr/seed0", bundle)
    info = json.loads((bundle / BUNDLE_FILE).read_text())
    entry = next(f for f in info["files"] if f["stored"].endswith(".gz"))
    bomb = gzip.compress(b"x" * (entry["size"] + 10_000))  # consistent with bundle.json except for what it unpacks to
    (bundle / entry["stored"]).write_bytes(bomb)
    entry.update(stored_size=len(bomb), stored_sha256=hashlib.sha256(bomb).hexdigest())
    (bundle / BUNDLE_FILE).write_text(json.dumps(info))
    verify_bundle(bundle)
    with pytest.raises(RunError, match=f"{entry['stored']} unpacks to more than the {entry['size']} bytes"):
        unpack_bundle(bundle, tmp_path / "out")


def test_only_finished_train_eval_and_analyze_runs_are_bundled(tiny_run, tmp_path):
    with pytest.raises(RunError, match="`mosr experiment` run"):
        export_bundle(tiny_run["out"], tmp_path / "b1")
    half = shutil.copytree(tiny_run["out"] / "stages/eval/rr/seed0", tmp_path / "half")
    (half / "DONE").unlink()
    with pytest.raises(RunError, match="unfinished experiment stage"):
        export_bundle(half, tmp_path / "b2")
    (tmp_path / "other").mkdir()
    (tmp_path / "other/x.txt").write_text("x")
    with pytest.raises(RunError, match="not a bundle"):
        export_bundle(tiny_run["out"] / "stages/eval/rr/seed0", tmp_path / "other")


def test_the_bundle_command(tiny_run, tmp_path, capsys):
    stage = tiny_run["out"] / "stages/eval/rr/seed0"
    assert main(["bundle", str(stage), "--out", str(tmp_path / "b")]) == 0
    assert "eval bundle" in capsys.readouterr().out
    assert main(["bundle", str(tmp_path / "b"), "--check"]) == 0
    assert main(["bundle", str(tmp_path / "b"), "--unpack", "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run/completions.jsonl").read_bytes() == (stage / "completions.jsonl").read_bytes()
    (tmp_path / "b/metrics.json").write_text("{}")
    assert main(["bundle", str(tmp_path / "b"), "--check"]) == 2
    assert "metrics.json was changed after export" in capsys.readouterr().err


# ----------------------------------------------------------------------------- rebuilt from bundles
def test_a_fresh_folder_rebuilds_the_report_from_the_bundles_alone(tiny_run, tmp_path, no_model_work):
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    before = {p: p.read_bytes() for p in bundles.rglob("*") if p.is_file()}
    cfg = ExperimentConfig.from_dict({**tiny_run["data"], "bundles": str(bundles)})
    result = run_experiment(cfg, tmp_path / "fresh")
    statuses = _statuses(tmp_path / "fresh")
    assert statuses.pop("report") == "ran"
    assert set(statuses.values()) == {"bundle"} and len(statuses) == len(BUNDLED)
    assert _rows(tmp_path / "fresh") == _rows(tiny_run["out"])
    md = result.report_md.read_text()
    assert "## Representations before and after" in md and "figures/rr-pca.png" in md
    assert not (tmp_path / "fresh/stages/train/rr/seed0/adapter_model.safetensors").exists()
    assert {p: p.read_bytes() for p in bundles.rglob("*") if p.is_file()} == before  # nothing exported again
    again = run_experiment(cfg, tmp_path / "fresh")
    assert {s.status for s in again.stages} == {"cached"}


def test_the_command_line_rebuilds_from_the_config_alone(tiny_run, tmp_path, monkeypatch, no_model_work, capsys):
    """`mosr experiment CONFIG` (no --out) in a fresh checkout whose config names the bundles folder."""
    _copy_bundles(tiny_run, tmp_path / "results/tiny")
    import yaml

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**tiny_run["data"], "bundles": "results/tiny"}))
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "tiny.yaml"]) == 0
    printed = capsys.readouterr().out
    assert "5 restored from bundles" in printed and "runs/tiny/report/report.html" in printed
    assert _rows(tmp_path / "runs/tiny") == _rows(tiny_run["out"])


def test_a_damaged_bundle_stops_the_experiment(tiny_run, tmp_path, no_model_work):
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    (bundles / "eval/rr/seed0/judgments.jsonl.gz").write_bytes(b"not what was exported")
    cfg = ExperimentConfig.from_dict({**tiny_run["data"], "bundles": str(bundles)})
    with pytest.raises(RunError, match="eval/rr/seed0: judgments.jsonl.gz was changed after export"):
        run_experiment(cfg, tmp_path / "fresh")


def test_a_damaged_bundle_leaves_the_unfinished_stage_folder_alone(tiny_run, tmp_path, no_model_work):
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    (bundles / "train/rr/seed0/run.json").write_text("{}")  # e.g. a line-ending conversion on checkout
    out = tmp_path / "fresh"
    partial = out / "stages/train/rr/seed0/checkpoints/step-000040"  # a half-done training of the same stage
    partial.mkdir(parents=True)
    (partial / "adapter.safetensors").write_bytes(b"weights")
    cfg = ExperimentConfig.from_dict({**tiny_run["data"], "bundles": str(bundles)})
    with pytest.raises(RunError, match="train/rr/seed0: run.json was changed after export"):
        run_experiment(cfg, out)
    assert (partial / "adapter.safetensors").read_bytes() == b"weights"
    assert not list((out / "stages/train/rr").glob("*.restoring"))


def test_a_new_judge_rejudges_the_bundled_completions(tiny_run, tmp_path, monkeypatch):
    import mosr.experiment as experiment

    for name in ("train", "run_eval", "run_analyze"):  # finish_run (judging) stays real
        monkeypatch.setattr(experiment, name, lambda *a, **k: pytest.fail("a stage ran"))
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    data = {**tiny_run["data"], "bundles": str(bundles), "eval": {**TINY["eval"], "judge": "gibberish"}, "analyze": None}
    run_experiment(ExperimentConfig.from_dict(data), tmp_path / "fresh")
    statuses = _statuses(tmp_path / "fresh")
    assert statuses == {"stages/train/rr/seed0": "bundle", "stages/eval/undefended/seed0": "rejudged",
                        "stages/eval/rr/seed0": "rejudged", "report": "ran"}
    for name in ("eval/undefended/seed0", "eval/rr/seed0"):
        judged = [json.loads(line) for line in (tmp_path / "fresh/stages" / name / "judgments.jsonl").read_text().splitlines()]
        assert len(judged) == 5 and {j["judge"] for j in judged} == {"gibberish"}
        assert json.loads((tmp_path / "fresh/stages" / name / "completions.jsonl").read_text().splitlines()[0])["completion"] == \
            json.loads((tiny_run["out"] / "stages" / name / "completions.jsonl").read_text().splitlines()[0])["completion"]
        info = verify_bundle(bundles / name)  # exported again, under the new hash
        assert info["stage"]["hash"] == (tmp_path / "fresh/stages" / name / "DONE").read_text().strip()
        assert info["stage"]["inputs"]["eval"]["judge"] == "gibberish"


def test_a_stage_that_needs_bundled_weights_is_named_not_retrained(tiny_run, tmp_path, no_model_work):
    """A train config change needs its adapter for everything downstream: named before anything runs."""
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    shutil.rmtree(bundles / "eval/rr/seed0")  # the eval of the bundled adapter must now generate here
    with pytest.raises(RunError, match=r"eval/rr/seed0 must run here and needs the adapter weights of stage train/rr/seed0.*"
                                       r"bundles hold no weights"):
        run_experiment(ExperimentConfig.from_dict({**tiny_run["data"], "bundles": str(bundles)}), tmp_path / "fresh")
    assert not (tmp_path / "fresh/stages").exists()  # checked before anything was restored or run


@pytest.fixture()
def new_rules_version(monkeypatch) -> Iterator[None]:
    """The judges' rules version (their fingerprint) changes, so every eval stage's hash changes."""
    import mosr.stage_inputs as stage_inputs

    monkeypatch.setattr(stage_inputs.judges, "rules_fingerprint", lambda: "0123456789ab")
    stage_inputs.resolved_judge.cache_clear()
    yield
    stage_inputs.resolved_judge.cache_clear()


@pytest.fixture()
def rules_that_move_every_verdict(monkeypatch, new_rules_version) -> None:
    """A new rules version whose keyword judge calls every completion compliance."""
    from mosr.judges import Judgment, KeywordJudge

    monkeypatch.setattr(KeywordJudge, "judge", lambda self, prompts, completions: [Judgment("compliance", "keyword", "new rules")
                                                                                   for _ in completions])


def test_a_new_rules_version_that_moves_no_verdict_keeps_the_bundled_analyses(tiny_run, tmp_path, monkeypatch, new_rules_version):
    """The judges' rules change (their fingerprint), the verdicts the analyses split prompts by do not: the
    evals are re-judged and the analyses kept, exported again under their new hashes, with no model."""
    import mosr.experiment as experiment

    for name in ("train", "run_eval", "run_analyze"):  # judging stays real
        monkeypatch.setattr(experiment, name, lambda *a, **k: pytest.fail("a stage ran"))
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    run_experiment(ExperimentConfig.from_dict({**tiny_run["data"], "bundles": str(bundles)}), tmp_path / "fresh")
    statuses = _statuses(tmp_path / "fresh")
    assert statuses["stages/eval/rr/seed0"] == "rejudged" and statuses["stages/analyze/rr/seed0"] == "bundle"
    assert statuses["stages/analyze/undefended/seed0"] == "bundle"
    for name in ("analyze/rr/seed0", "analyze/undefended/seed0"):
        info = verify_bundle(bundles / name)
        assert info["stage"]["hash"] == (tmp_path / "fresh/stages" / name / "DONE").read_text().strip()
        assert info["stage"]["inputs"]["eval"] == (tmp_path / "fresh/stages" / name.replace("analyze", "eval") / "DONE").read_text().strip()
    assert _rows(tmp_path / "fresh") == _rows(tiny_run["out"])


def test_a_new_judge_that_moves_the_split_verdicts_names_the_analysis_to_redo(tiny_run, tmp_path, monkeypatch,
                                                                              rules_that_move_every_verdict):
    """New rules that change the verdicts an analysis read: analysing again needs the adapter, and the error says so."""
    import mosr.experiment as experiment

    for name in ("train", "run_eval", "run_analyze"):
        monkeypatch.setattr(experiment, name, lambda *a, **k: pytest.fail("a stage ran"))
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    # rr only: the undefended model's analysis needs no adapter, and would simply run again
    with pytest.raises(RunError, match=r"analyze/rr/seed0 split 5 pseudo-malicious prompts .* changed with the new judge.*"
                                       r"needs its adapter"):
        run_experiment(ExperimentConfig.from_dict({**tiny_run["data"], "methods": ["rr"], "bundles": str(bundles)}), tmp_path / "fresh")


def test_a_moved_verdict_is_analysed_again_where_the_adapter_is(tiny_run, tmp_path, monkeypatch, rules_that_move_every_verdict):
    """The fix the error names: without the train bundle the adapter is retrained here, the evals are
    re-judged from their bundles (no generation) and the analyses whose verdicts moved run again."""
    import mosr.experiment as experiment
    import mosr.generation as generation

    monkeypatch.setattr(experiment, "run_eval", lambda *a, **k: pytest.fail("an eval generated"))
    monkeypatch.setattr(generation, "generate", lambda *a, **k: pytest.fail("generated"))
    bundles = _copy_bundles(tiny_run, tmp_path / "bundles")
    shutil.rmtree(bundles / "train/rr/seed0")
    run_experiment(ExperimentConfig.from_dict({**tiny_run["data"], "bundles": str(bundles)}), tmp_path / "fresh")
    statuses = _statuses(tmp_path / "fresh")
    assert statuses["stages/train/rr/seed0"] == "ran" and statuses["stages/eval/rr/seed0"] == "rejudged"
    assert statuses["stages/analyze/rr/seed0"] == "ran" and statuses["stages/analyze/undefended/seed0"] == "ran"
    assert verify_bundle(bundles / "analyze/rr/seed0")["stage"]["hash"] == (tmp_path / "fresh/stages/analyze/rr/seed0/DONE").read_text().strip()


# ---------------------------------------------------------------------------------------- compare
def test_compare_reads_bundles_like_run_folders(tiny_run, tmp_path):
    bundles, stages = tiny_run["bundles"], tiny_run["out"] / "stages"
    from_runs, n_runs = shared_records([("undefended", stages / "eval/undefended/seed0"), ("rr", stages / "eval/rr/seed0")])
    from_bundles, n_bundles = shared_records([("undefended", bundles / "eval/undefended/seed0"), ("rr", bundles / "eval/rr/seed0")])
    assert n_runs == n_bundles == 5
    assert [r["eval_metrics"] for r in from_bundles] == [r["eval_metrics"] for r in from_runs]
    assert from_bundles[1]["run"] == str(bundles / "eval/rr/seed0")
    mixed = [f"undefended={stages / 'eval/undefended/seed0'}", f"rr={bundles / 'eval/rr/seed0'}"]
    assert main(["compare", *mixed, "--out", str(tmp_path / "cmp")]) == 0
    assert (tmp_path / "cmp/report.html").is_file()
    with pytest.raises(DataError, match="bundle of a `mosr train` run"):
        shared_records([("a", bundles / "eval/rr/seed0"), ("b", bundles / "train/rr/seed0")])


# --------------------------------------------------------------------------- pieces (fake stages)
def _never() -> Runners:
    def fail(*_: Any) -> None:
        raise AssertionError("a stage ran")
    return Runners(train=fail, evaluate=fail, analyze=fail, rejudge=fail)


def test_two_shards_give_the_report_of_one_full_run(tmp_path):
    full = Fakes()
    run_experiment(config(seeds=[0, 1]), tmp_path / "full", runners=full.runners())
    cfg = config(seeds=[0, 1], bundles=str(tmp_path / "bundles"))
    one, two = Fakes(), Fakes()
    first = run_experiment(cfg, tmp_path / "machine1", runners=one.runners(), shard="1/2")
    assert first.missing and not first.report_html.exists() and "no report yet" in first.summary()
    second = run_experiment(cfg, tmp_path / "machine2", runners=two.runners(), shard="2/2")
    assert not second.missing and second.report_html.is_file()
    ran1 = {s.name for s in first.stages if s.status == "ran"}
    ran2 = {s.name for s in second.stages if s.status == "ran" and s.name != "report"}
    assert ran1 and ran2 and not ran1 & ran2  # each stage ran on one machine only ...
    assert ran1 | ran2 == {s.name for s in build_plan(cfg, tmp_path, full.runners()).stages}  # ... and every stage ran
    assert {s.name for s in second.stages if s.status == "bundle"} == ran1
    assert Counter(one.calls) + Counter(two.calls) == Counter(full.calls)
    assert _rows(tmp_path / "machine2") == _rows(tmp_path / "full")
    third = run_experiment(cfg, tmp_path / "machine3", runners=_never())  # a third checkout: the bundles alone
    assert {s.status for s in third.stages if s.name != "report"} == {"bundle"}
    assert _rows(tmp_path / "machine3") == _rows(tmp_path / "full")


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_shards_partition_the_stages_into_whole_chains(tmp_path, count):
    plan = build_plan(config(seeds=[0, 1, 2], sweep={"param": "alpha", "values": [5, 20], "methods": ["mosr"]}), tmp_path,
                      Fakes().runners())
    shards = [select(plan.stages, shard=(i, count)) for i in range(1, count + 1)]
    assert sum(len(s) for s in shards) == len(plan.stages) and set().union(*shards) == {s.name for s in plan.stages}
    for shard in shards:  # select adds what a stage needs; a shard already holds it
        assert all(need in shard for s in plan.stages if s.name in shard for need in s.needs)


def test_only_runs_the_chosen_stages_and_what_they_need(tmp_path):
    cfg = config(bundles=str(tmp_path / "bundles"))
    fakes = Fakes()
    result = run_experiment(cfg, tmp_path / "m1", runners=fakes.runners(), only=["eval/rr/*"])
    assert fakes.calls == [("train", "rr"), ("eval", "rr")]
    assert "stages/analyze/rr/seed0" in result.missing and not result.report_html.exists()
    assert _bundle_dirs(tmp_path / "bundles") == {"train/rr/seed0", "eval/rr/seed0"}
    elsewhere = Fakes()
    with pytest.raises(RunError, match="analyze/rr/seed0 must run here and needs the adapter weights of stage train/rr/seed0"):
        run_experiment(cfg, tmp_path / "m2", runners=elsewhere.runners(), only=["analyze/rr/*"])
    assert elsewhere.calls == []
    fakes.calls.clear()
    run_experiment(cfg, tmp_path / "m1", runners=fakes.runners(), only=["analyze/rr/*"])  # where rr was trained
    assert fakes.calls == [("analyze", "rr")]
    with pytest.raises(ConfigError, match="matches no stage"):
        run_experiment(cfg, tmp_path / "m1", runners=fakes.runners(), only=["eval/no-such-method/*"])


def test_bad_shards_are_refused():
    assert parse_shard("2/3") == (2, 3)
    for text in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ConfigError, match="--shard expects I/N"):
            parse_shard(text)


def test_the_shipped_experiment_names_its_bundles_folder_and_a_cheaper_pass_leaves_it_alone():
    from mosr.cli import build_parser
    from mosr.commands.experiment import overrides

    path = Path(__file__).resolve().parents[1] / "configs/experiment.yaml"
    cfg = ExperimentConfig.load(path)
    assert cfg.bundles == "results/experiment"

    def bundles(*flags: str) -> str | None:
        return ExperimentConfig.load(path, overrides(build_parser().parse_args(["experiment", str(path), *flags]), cfg)).bundles

    assert bundles() == bundles("--shard", "1/2") == "results/experiment"
    assert bundles("--limit", "50") is None and bundles("--no-bundles") is None
    assert bundles("--limit", "50", "--bundles", "results/cheap") == "results/cheap"


def test_the_shipped_experiment_keeps_the_hashes_of_its_bundled_trainings(tmp_path):
    # A training key added later must not change the stage hash of trainings already bundled: those
    # stages cannot be redone without hours of training, and their weights are not kept.
    root = Path(__file__).resolve().parents[1]
    bundled = {}
    for info in sorted((root / "results/experiment/train").glob("*/seed*/bundle.json")):
        stage = json.loads(info.read_text())["stage"]
        bundled[stage["name"]] = stage["hash"]
    if not bundled:
        pytest.skip("no bundled trainings in this checkout")
    plan = build_plan(ExperimentConfig.load(root / "configs/experiment.yaml"), tmp_path)
    planned = {s.name: s.key for s in plan.stages}
    assert {name: planned.get(name) for name in bundled} == bundled


def test_judging_a_bundle_in_place_is_refused_and_leaves_it_as_exported(tiny_run, tmp_path, capsys):
    bundle = tmp_path / "b"
    shutil.copytree(tiny_run["bundles"] / "eval/rr/seed0", bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    assert main(["judge", str(bundle), "--judge", "keyword"]) != 0
    assert "is a result bundle" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before  # no lock file left either
