"""Run folders: the early write check."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from mosr.errors import RunError
from mosr.runs import RunDir


def _open_many(path: str, n: int) -> None:
    for _ in range(n):
        RunDir(path)


def test_processes_sharing_one_run_folder_do_not_trip_each_others_write_check(tmp_path):
    # every rank of a distributed run opens the same output folder at the same moment
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_open_many, args=(str(tmp_path / "run"), 300)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert not list((tmp_path / "run").iterdir())  # no probe left behind


def test_an_unwritable_folder_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunError, match="cannot write to output folder"):
        RunDir(blocker / "run")


def test_typed_records_round_trip_the_files_of_an_eval_run(tmp_path, tiny):
    """Completions, judgments and perplexity read back through mosr.records give the same keys as on disk."""
    import json

    from mosr.evaluation import EvalConfig, run_eval
    from mosr.records import (COMPLETIONS, JUDGMENTS, PERPLEXITY, Completion, JudgmentRecord, PerplexityRecord, read_completions,
                              read_judgments, read_perplexity, read_run_meta)

    run = tmp_path / "run"
    run_eval(EvalConfig(model="tiny", suites=["over-refusal", "capability"], limit=2, judge="keyword", max_new_tokens=4,
                        batch_size=2), run, loaded=tiny)
    for name, read, cls in ((COMPLETIONS, read_completions, Completion), (JUDGMENTS, read_judgments, JudgmentRecord),
                            (PERPLEXITY, read_perplexity, PerplexityRecord)):
        on_disk = [json.loads(line) for line in (run / name).read_text().splitlines()]
        typed = read(run)
        assert typed and all(isinstance(r, cls) for r in typed)
        assert [r.to_dict() for r in typed] == on_disk, name
    meta = read_run_meta(run)
    assert meta.command and meta.config["model"] == "tiny" and meta.seed == 0
    assert read_run_meta(tmp_path / "nowhere").seed == 0
