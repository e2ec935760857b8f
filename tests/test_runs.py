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
