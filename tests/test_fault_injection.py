"""Fault injection: kill `mosr eval`, `mosr train` and `mosr experiment` with SIGKILL at seeded points, then resume.

Each command runs in a subprocess on a tiny random model and is killed once it has made a seeded amount
of progress (records appended, checkpoints written, stages finished), after a seeded extra delay. The
same command (for train: with ``--resume`` once a run exists) then finishes the run, and the results must
be identical to an uninterrupted run's, with no duplicate or missing records.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from mosr.cli import main

pytestmark = pytest.mark.fault_injection

KILLS = {"eval": (0, 1, 2), "train": (0, 1), "experiment": (0, 1)}  # seeds of the kill points


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch, tmp_path):
    """The subprocesses run on one thread; so do the in-process runs, for bitwise-equal arithmetic."""
    monkeypatch.setenv("MOSR_CACHE", str(tmp_path / "cache"))
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def model(tmp_path) -> Path:
    from mosr.testing import save_tiny_model

    return save_tiny_model(tmp_path / "tiny", init_std=0.3)  # varied completions, not one repeated token


def _env() -> dict[str, str]:
    return {**os.environ, "MOSR_PROGRESS": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_and_kill(args: list[str], progress: Callable[[], int], target: int, delay: float, log: Path, timeout: float = 120) -> bool:
    """Run ``mosr ARGS``; SIGKILL it once ``progress() >= target`` (plus ``delay`` s). False if it finished first."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "mosr.cli", *args], env=_env(), stdout=subprocess.DEVNULL, stderr=err)
        start = time.monotonic()
        while proc.poll() is None:
            if progress() >= target:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
                return True
            if time.monotonic() - start > timeout:
                proc.kill()
                proc.wait()
                pytest.fail(f"mosr {' '.join(args)} ran longer than {timeout} s")
            time.sleep(0.002)
    assert proc.returncode == 0, log.read_text()
    return False


def count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


def max_step(run: Path) -> int:
    steps = [int(p.name.split("-")[1]) for p in (run / "checkpoints").glob("step-*")]
    return max(steps, default=0)


def assert_one_record_per_key(path: Path, expected: int) -> None:
    keys = [json.loads(line)["key"] for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(keys) == len(set(keys)) == expected, f"{path}: {len(keys)} records, {len(set(keys))} keys, expected {expected}"


def assert_same_adapter(a: Path, b: Path) -> None:
    from safetensors.torch import load_file

    x, y = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def loss_steps(run: Path) -> list[str]:
    rows = (run / "losses.csv").read_text().splitlines()
    head = rows[0].split(",")
    return [",".join(v for h, v in zip(head, r.split(",")) if h != "seconds") for r in rows[1:]]


# -------------------------------------------------------------------------------------------- eval
def test_killed_evals_resume_to_identical_results(tmp_path, model):
    args = ["eval", "--model", str(model), "--suite", "over-refusal", "--limit", "4", "--judge", "keyword",
            "--max-new-tokens", "6", "--batch-size", "2"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    total = count_lines(tmp_path / "full" / "completions.jsonl")
    assert total == 12
    run = tmp_path / "killed"
    kills = 0
    for seed in KILLS["eval"]:
        rng = random.Random(seed)
        done = count_lines(run / "completions.jsonl")
        if done >= total - 1:
            break
        kills += run_and_kill([*args, "--out", str(run)], lambda: count_lines(run / "completions.jsonl"),
                              rng.randint(done + 1, total - 1), rng.uniform(0, 0.02), tmp_path / "log")
    assert kills >= 1
    assert main([*args, "--out", str(run)]) == 0
    assert_one_record_per_key(run / "completions.jsonl", total)
    assert any(json.loads(x)["completion"] for x in (run / "completions.jsonl").read_text().splitlines())
    for name in ("completions.jsonl", "judgments.jsonl", "metrics.json", "summary.md"):
        assert (run / name).read_bytes() == (tmp_path / "full" / name).read_bytes(), name


# ------------------------------------------------------------------------------------------- train
def test_killed_training_resumes_to_the_same_adapter(tmp_path, model):
    conf = tmp_path / "c.yaml"
    conf.write_text("harmful_datasets: []\nmax_pairs: 4\nmax_retain: 4\nbatch_size: 2\nmax_length: 96\n")
    args = ["train", "--method", "rr", "--model", str(model), "--config", str(conf), "--steps", "6",
            "--set", "checkpoint_every=1", "--set", "lora_dropout=0.1"]
    assert main([*args, "--out", str(tmp_path / "full")]) == 0
    run = tmp_path / "killed"
    kills = 0
    for seed in KILLS["train"]:
        rng = random.Random(100 + seed)
        if max_step(run) >= 5:
            break
        resume = ["--resume"] if (run / "run.json").is_file() else []
        kills += run_and_kill([*args, "--out", str(run), *resume], lambda: max_step(run), rng.randint(max_step(run) + 1, 5),
                              rng.uniform(0, 0.05), tmp_path / "log")
    assert kills >= 1
    assert main([*args, "--out", str(run), *(["--resume"] if (run / "run.json").is_file() else [])]) == 0
    assert_same_adapter(run, tmp_path / "full")
    assert loss_steps(run) == loss_steps(tmp_path / "full")  # every step once, with the same losses
    assert json.loads((run / "run.json").read_text())["result"]["steps"] == 6


# -------------------------------------------------------------------------------------- experiment
def test_killed_experiments_resume_to_identical_results(tmp_path, model):
    conf = tmp_path / "exp.yaml"
    conf.write_text(json.dumps({
        "model": str(model), "methods": ["undefended", "rr"], "seeds": [0], "analyze": None,
        "train": {"steps": 4, "batch_size": 1, "max_length": 64, "harmful_datasets": [], "max_pairs": 4, "max_retain": 4,
                  "checkpoint_every": 1, "leak_threshold": 1.0},
        "eval": {"suites": ["over-refusal"], "sets": ["xstest-safe", "jbb-benign"], "limit": 3, "max_new_tokens": 4,
                 "batch_size": 2, "judge": "keyword"},
    }))

    def events(root: Path) -> int:
        stages = root / "stages"
        return (len(list(stages.glob("*/*/*/DONE"))) + sum(count_lines(p) for p in stages.glob("eval/*/*/completions.jsonl"))
                + max_step(stages / "train" / "rr" / "seed0"))

    full = tmp_path / "full"
    assert main(["experiment", str(conf), "--out", str(full)]) == 0
    total = events(full)
    run = tmp_path / "killed"
    kills = 0
    for seed in KILLS["experiment"]:
        rng = random.Random(200 + seed)
        if events(run) >= total - 1:
            break
        kills += run_and_kill(["experiment", str(conf), "--out", str(run)], lambda: events(run),
                              rng.randint(events(run) + 1, total - 1), rng.uniform(0, 0.05), tmp_path / "log")
    assert kills >= 1
    assert main(["experiment", str(conf), "--out", str(run)]) == 0
    assert_same_adapter(run / "stages/train/rr/seed0", full / "stages/train/rr/seed0")
    for method in ("undefended", "rr"):
        a, b = run / f"stages/eval/{method}/seed0", full / f"stages/eval/{method}/seed0"
        assert_one_record_per_key(a / "completions.jsonl", 6)
        assert (a / "judgments.jsonl").read_bytes() == (b / "judgments.jsonl").read_bytes(), method
        strip = lambda m: {k: v for k, v in m.items() if k != "adapter"}  # noqa: E731 - the adapter path names the experiment folder
        assert strip(json.loads((a / "metrics.json").read_text())) == strip(json.loads((b / "metrics.json").read_text())), method
    rows = lambda root: json.loads((root / "report" / "summary.json").read_text())["rows"]  # noqa: E731
    assert rows(run) == rows(full)
