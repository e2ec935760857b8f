"""`mosr compare`: several eval runs, one report, counted on the prompts every run judged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mosr.comparison import parse_entry, shared_records
from mosr.errors import DataError


def write_run(folder: Path, verdicts: dict[str, str], judge: str = "keyword", seed: int = 0) -> Path:
    """An eval run folder with plain harmful prompts ``h*`` and over-refusal prompts ``o*``."""
    folder.mkdir(parents=True)
    with open(folder / "judgments.jsonl", "w", encoding="utf-8") as fh:
        for sid, verdict in verdicts.items():
            suite, dataset = ("safety", "advbench:test") if sid.startswith("h") else ("over-refusal", "xstest-safe")
            fh.write(json.dumps({"key": f"{dataset}|none|{sid}", "suite": suite, "dataset": dataset, "attack": "none",
                                 "sample_id": sid, "verdict": verdict, "judge": judge}) + "\n")
    (folder / "run.json").write_text(json.dumps({"seed": seed, "model": {"spec": "tiny"}}))
    return folder


def test_rates_use_only_the_prompts_every_run_judged(tmp_path):
    a = write_run(tmp_path / "a", {"h1": "refusal", "h2": "compliance", "h3": "refusal", "o1": "refusal", "o2": "compliance"})
    # b judged one more harmful prompt (h4) and one prompt fewer (o2)
    b = write_run(tmp_path / "b", {"h1": "gibberish", "h2": "gibberish", "h3": "compliance", "h4": "refusal", "o1": "compliance"}, seed=3)
    records, n = shared_records([("rr", a), ("mosr", b)])
    assert n == 4  # h1, h2, h3, o1
    safety = {r["label"]: r["eval_metrics"]["suites"]["safety"]["safety"] for r in records}
    assert (safety["rr"]["k"], safety["rr"]["n"]) == (2, 3)
    assert (safety["mosr"]["k"], safety["mosr"]["n"]) == (2, 3)
    over = {r["label"]: r["eval_metrics"]["suites"]["over-refusal"]["over_refusal"] for r in records}
    assert (over["rr"]["k"], over["rr"]["n"]) == (1, 1)
    assert (over["mosr"]["k"], over["mosr"]["n"]) == (0, 1)
    assert [r["seed"] for r in records] == [0, 3]
    assert records[0]["eval_metrics"]["model"] == "tiny"


def test_bad_input_is_a_clear_error(tmp_path):
    a = write_run(tmp_path / "a", {"h1": "refusal"})
    with pytest.raises(DataError, match="different judges"):
        shared_records([("a", a), ("b", write_run(tmp_path / "b", {"h1": "refusal"}, judge="learned"))])
    with pytest.raises(DataError, match="share no judged prompt"):
        shared_records([("a", a), ("c", write_run(tmp_path / "c", {"h2": "refusal"}))])
    with pytest.raises(DataError, match="judgments.jsonl not found"):
        shared_records([("a", a), ("d", tmp_path / "missing")])
    with pytest.raises(DataError, match="at least two"):
        shared_records([("a", a)])
    with pytest.raises(DataError, match="METHOD=RUN"):
        parse_entry("=runs/x")
    assert parse_entry("runs/eval-rr") == ("eval-rr", Path("runs/eval-rr"))
    assert parse_entry("rr=runs/x=y") == ("rr", Path("runs/x=y"))


def test_cli_writes_a_report_with_a_pareto_plot(tmp_path, capsys):
    from mosr.cli import main

    a = write_run(tmp_path / "a", {"h1": "compliance", "h2": "compliance", "o1": "compliance"})
    b = write_run(tmp_path / "b", {"h1": "refusal", "h2": "refusal", "o1": "refusal"})
    assert main(["compare", f"undefended={a}", f"rr={b}", "--out", str(tmp_path / "cmp")]) == 0
    assert "3 prompts judged by every run" in capsys.readouterr().out
    md = (tmp_path / "cmp" / "report.md").read_text()
    assert "RR (Circuit Breakers)" in md and "100.0 [" in md
    assert (tmp_path / "cmp" / "figures" / "pareto.png").stat().st_size > 1000
    assert (tmp_path / "cmp" / "report.html").is_file()


def test_report_gives_the_exact_command_and_where_the_completions_are(tmp_path):
    import shlex

    from mosr.cli import main

    a = write_run(tmp_path / "a", {"h1": "compliance", "o1": "compliance"})
    b = write_run(tmp_path / "b", {"h1": "refusal", "o1": "refusal"})
    out = tmp_path / "cmp"
    assert main(["compare", f"undefended={a}", f"rr={b}", "--out", str(out), "--title", "two runs"]) == 0
    md = (out / "report.md").read_text()
    command = md.split("## Reproduce", 1)[1].split("```")[1].strip()
    assert shlex.split(command) == ["mosr", "compare", f"undefended={a}", f"rr={b}", "--out", str(out), "--title", "two runs"]
    assert "eval run folders" in md and "stages/" not in md


def test_unwritable_output_is_a_clear_error(tmp_path, capsys):
    from mosr.cli import main

    a = write_run(tmp_path / "a", {"h1": "refusal"})
    b = write_run(tmp_path / "b", {"h1": "compliance"})
    (tmp_path / "file").write_text("not a folder")
    assert main(["compare", f"rr={a}", f"mosr={b}", "--out", str(tmp_path / "file" / "cmp")]) == 2
    assert "cannot write to output folder" in capsys.readouterr().err


def test_runs_judged_with_other_rules_are_named_in_a_warning_and_the_records(tmp_path, caplog):
    a = write_run(tmp_path / "a", {"h1": "refusal", "o1": "refusal"})
    b = write_run(tmp_path / "b", {"h1": "compliance", "o1": "compliance"}, seed=1)
    (a / "metrics.json").write_text(json.dumps({"judge_rules": "aaaaaaaaaaaa"}))
    (b / "metrics.json").write_text(json.dumps({"judge_rules": "bbbbbbbbbbbb"}))
    with caplog.at_level("WARNING", logger="mosr.comparison"):
        records, _ = shared_records([("rr", a), ("mosr", b)])
    assert "different versions of the judges' rules" in caplog.text and "mosr judge RUN --judge keyword" in caplog.text
    assert [r["eval_metrics"]["judge_rules"] for r in records] == ["aaaaaaaaaaaa", "bbbbbbbbbbbb"]
    (b / "metrics.json").write_text(json.dumps({"judge_rules": "aaaaaaaaaaaa"}))
    caplog.clear()
    with caplog.at_level("WARNING", logger="mosr.comparison"):
        shared_records([("rr", a), ("mosr", b)])
    assert "judges' rules" not in caplog.text
