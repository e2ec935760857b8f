"""Regenerate tests/golden/*.json (run only when a behaviour change is intended).

``PYTHONPATH=<a checkout's src> python tests/golden/make_golden.py`` writes the values of that
checkout; the module names of older checkouts (``mosr.evaluate``, ``mosr.commands.analyze``) are
mapped to the current ones.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))

import mosr  # noqa: E402

try:
    import mosr.evaluation  # noqa: F401
except ImportError:  # a checkout from before the rename
    import mosr.commands.analyze
    import mosr.evaluate

    sys.modules["mosr.evaluation"] = sys.modules["mosr.evaluate"]
    sys.modules["mosr.analysis_run"] = sys.modules["mosr.commands.analyze"]

from test_golden import analyze_snapshot, eval_snapshot, train_snapshot  # noqa: E402

torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as tmp:
    (HERE / "eval.json").write_text(json.dumps(eval_snapshot(Path(tmp) / "eval"), indent=1, sort_keys=True) + "\n")
    (HERE / "train.json").write_text(json.dumps(train_snapshot(Path(tmp) / "train"), indent=1, sort_keys=True) + "\n")
    (HERE / "analyze.json").write_text(json.dumps(analyze_snapshot(Path(tmp) / "analyze"), indent=1, sort_keys=True) + "\n")
