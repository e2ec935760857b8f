"""`mosr eval` and `mosr analyze` on two CPU processes (gloo, torchrun) give what one process gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mosr

EVAL = ["eval", "--suite", "over-refusal", "--limit", "5", "--judge", "keyword", "--max-new-tokens", "8", "--batch-size", "2"]
ANALYZE = ["analyze", "--limit", "10", "--layers", "0", "1", "--k", "5", "--batch-size", "4"]
DERIVED = ("judgments.jsonl", "metrics.json", "summary.md", "rates.png")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from mosr.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("dist") / "tiny", num_layers=2, init_std=0.3)  # varied completions


def mosr_cli(args: list[str], nproc: int, tmp: Path) -> subprocess.CompletedProcess:
    """``mosr ARGS`` on ``nproc`` processes, one thread each (the same floating-point path for both runs).
    ``--standalone`` lets the launcher pick a free port, so runs never race for a fixed one."""
    src = str(Path(mosr.__file__).resolve().parents[1])
    env = {**os.environ, "MOSR_PROGRESS": "0", "MOSR_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    launch = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)] if nproc > 1 else []
    proc = subprocess.run([sys.executable, *launch, "-m", "mosr", *args], env=env, capture_output=True, text=True, timeout=300)
    own = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "Traceback", "RuntimeError", "terminate", "[rank"))]
    assert proc.returncode == 0, "\n".join(own) + "\n...\n" + proc.stderr[-3000:]
    return proc


def _json(path: Path):
    return json.loads(path.read_text())


def _interrupt(run: Path, keep: int, journal: int) -> int:
    """Leave ``run`` as a 2-process run killed mid-way: ``keep`` records in completions.jsonl, the next
    ``journal`` in process 1's journal (its last line torn), the derived files gone. Returns the records lost."""
    lines = (run / "completions.jsonl").read_text().splitlines(keepends=True)
    (run / "completions.jsonl").write_text("".join(lines[:keep]))
    torn = lines[keep + journal - 1]
    (run / "completions.rank1.jsonl").write_text("".join(lines[keep : keep + journal - 1]) + torn[: len(torn) // 2])
    for name in DERIVED:
        (run / name).unlink()
    return len(lines) - keep - journal + 1


def test_eval_on_two_processes_matches_one_and_resumes_with_either(model_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    mosr_cli([*EVAL, "--model", str(model_dir), "--out", str(one)], 1, tmp_path)
    proc = mosr_cli([*EVAL, "--model", str(model_dir), "--out", str(two)], 2, tmp_path)
    assert proc.stdout.count("results:") == 1  # only the main process reports
    want = (one / "completions.jsonl").read_bytes()
    assert (two / "completions.jsonl").read_bytes() == want
    assert (two / "metrics.json").read_bytes() == (one / "metrics.json").read_bytes()
    assert (two / "judgments.jsonl").read_bytes() == (one / "judgments.jsonl").read_bytes()
    meta = _json(two / "run.json")
    # 15 prompts in 8 batches of 2, dealt round-robin: both processes generated their share
    assert meta["processes"] == 2 and meta["generated_by_process"] == [8, 7]
    assert _json(one / "run.json")["processes"] == 1 and _json(one / "run.json")["generated_by_process"] == [15]
    assert not list(two.glob("completions.rank*"))
    completions = [json.loads(line)["completion"] for line in want.decode().splitlines()]
    assert len(set(completions)) > 5  # varied text: a wrong batch or order would show

    # killed mid-way, then resumed on two processes, then (killed again) on one: the same folder as one process
    for nproc in (2, 1):
        lost = _interrupt(two, keep=4, journal=5)
        mosr_cli([*EVAL, "--model", str(model_dir), "--out", str(two)], nproc, tmp_path)
        assert (two / "completions.jsonl").read_bytes() == want
        assert (two / "metrics.json").read_bytes() == (one / "metrics.json").read_bytes()
        assert not list(two.glob("completions.rank*"))
        meta = _json(two / "run.json")
        assert meta["processes"] == nproc and sum(meta["generated_by_process"]) == lost


def test_a_pooled_eval_on_two_processes_matches_one(model_dir, tmp_path):
    """With --pool-tasks the one plan over every set is dealt across processes, batch by batch."""
    one, two = tmp_path / "one", tmp_path / "two"
    pooled = [*EVAL, "--pool-tasks", "--limit", "3"]
    mosr_cli([*pooled, "--model", str(model_dir), "--out", str(one)], 1, tmp_path)
    mosr_cli([*pooled, "--model", str(model_dir), "--out", str(two)], 2, tmp_path)
    assert (two / "completions.jsonl").read_bytes() == (one / "completions.jsonl").read_bytes()
    assert (two / "metrics.json").read_bytes() == (one / "metrics.json").read_bytes()
    # 9 prompts (3 sets of 3) in one plan of 5 batches of 2 rows (the last 1), dealt round-robin: batches 0, 2, 4 and 1, 3
    assert _json(two / "run.json")["generated_by_process"] == [5, 4]


def _comparable(metrics: dict) -> dict:
    for variant in metrics["variants"]:
        for extraction in variant["extraction"].values():
            extraction.pop("seconds")
    return metrics


def test_analyze_extraction_on_two_processes_matches_one(model_dir, tmp_path):
    import numpy as np

    one, two = tmp_path / "one", tmp_path / "two"
    mosr_cli([*ANALYZE, "--model", str(model_dir), "--out", str(one)], 1, tmp_path)
    proc = mosr_cli([*ANALYZE, "--model", str(model_dir), "--out", str(two)], 2, tmp_path)
    assert proc.stdout.count("report:") == 1
    meta = _json(two / "run.json")
    # 3 groups of 10 prompts in batches of 4 (4, 4, 2): process 0 takes batches 0 and 2, process 1 batch 1
    assert meta["processes"] == 2 and meta["prompts_by_process"] == [18, 12]
    arrays = sorted((one / "representations").glob("*.npy"))
    assert len(arrays) == 3
    for path in arrays:  # the same batches and padding: bit-identical vectors
        assert np.array_equal(np.load(path), np.load(two / "representations" / path.name))
    assert _comparable(_json(two / "metrics.json")) == _comparable(_json(one / "metrics.json"))
    assert (two / "boundary_scores.csv").read_text() == (one / "boundary_scores.csv").read_text()


def test_batches_are_dealt_round_robin_across_calls():
    from mosr.distributed import ProcessGroup

    assert ProcessGroup().dealer() is None
    deal = ProcessGroup(world=2, rank=1).dealer()
    assert [deal(b) for b in (0, 1, 2)] + [deal(b) for b in (0, 1)] == [False, True, False, True, False]


def test_shutdown_closes_the_process_group_and_is_a_no_op_without_one(tmp_path):
    import torch.distributed as dist

    from mosr.distributed import shutdown

    shutdown()  # no group: nothing to do
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'store'}")
    try:
        shutdown()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_the_process_group_waits_as_long_as_configured(monkeypatch):
    import datetime

    import accelerate

    from mosr.distributed import _group, wait_limit
    from mosr.errors import RunError

    made = {}

    class FakeState:
        num_processes, process_index, device = 2, 1, "cpu"

        def __init__(self, **kwargs):
            made.update(kwargs)

    monkeypatch.setattr(accelerate, "PartialState", FakeState)
    monkeypatch.setenv("MOSR_DIST_TIMEOUT_MIN", "240")
    group = _group.__wrapped__(2)
    assert made["timeout"] == datetime.timedelta(hours=4) and group.world == 2
    monkeypatch.delenv("MOSR_DIST_TIMEOUT_MIN")
    assert wait_limit() == datetime.timedelta(minutes=180)  # longer than torch's 10 (NCCL) / 30 (gloo) minutes
    for bad in ("soon", "0"):
        monkeypatch.setenv("MOSR_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(RunError, match="MOSR_DIST_TIMEOUT_MIN"):
            wait_limit()
