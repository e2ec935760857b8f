"""The training loop under two processes on CPU (gloo), launched with torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def test_two_cpu_processes_train_one_adapter(tmp_path):
    from mosr.testing import save_tiny_model

    model_dir = save_tiny_model(tmp_path / "tiny", num_layers=4)
    conf = tmp_path / "c.yaml"
    conf.write_text("harmful_datasets: []\nmax_pairs: 8\nmax_retain: 8\nbatch_size: 2\nmax_length: 96\nsteps: 3\n")
    out = tmp_path / "run"
    env = {**os.environ, "MOSR_PROGRESS": "0", "MOSR_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "mosr.cli", "train", "--method", "rr", "--model", str(model_dir), "--config", str(conf), "--out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    # a failing rank's own message comes before torchrun's long summary; show it first
    own = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "Traceback", "RuntimeError"))]
    assert proc.returncode == 0, "\n".join(own) + "\n...\n" + proc.stderr[-1500:]
    assert proc.stdout.count("trained rr for 3 steps") == 1  # only the main process reports
    run = json.loads((out / "run.json").read_text())
    assert run["processes"] == 2
    single = json.loads((out / "train_data.jsonl").read_text().splitlines()[0])
    assert single["role"] == "malicious"
    assert (out / "adapter_model.safetensors").is_file()
    losses = (out / "losses.csv").read_text().splitlines()
    assert len(losses) == 4
    # tokens per step are summed over both processes' batches
    column = losses[0].split(",").index("tokens")
    tokens = [int(line.split(",")[column]) for line in losses[1:]]
    assert all(t > 0 for t in tokens)
