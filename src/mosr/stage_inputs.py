"""What each experiment stage's hash covers: the config parts a train, eval or analyze stage depends on.

A stage is redone exactly when these change (:mod:`mosr.stages`). Keys that cannot change a result
(how often checkpoints are saved, the eval seed under greedy decoding, folders) are left out, and a
training key added after stages were bundled enters only when it differs from the value that
reproduces the behaviour from before, so that bundled stages keep their hashes (likewise for eval keys).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from mosr import judges
from mosr.analysis_run import AnalyzeConfig
from mosr.errors import MosrError
from mosr.eval_config import ADDED_KEYS as EVAL_ADDED
from mosr.evaluation import EvalConfig
from mosr.training import TrainConfig

TRAIN_IGNORED = ("checkpoint_every", "keep_checkpoints")  # how often to save does not change the adapter
# stop_after None = every step; leak_check_val False = the leak check of the test sets only;
# oalw_reference "compliant" = OALW measured to the pseudo-malicious pool trained on
TRAIN_ADDED: dict[str, Any] = {"stop_after": None, "leak_check_val": False, "oalw_reference": "compliant"}


def _as_before(added: dict[str, Any], key: str, value: Any) -> bool:
    return key in added and type(value) is type(added[key]) and value == added[key]


def train_inputs(tc: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in dataclasses.asdict(tc).items() if k not in TRAIN_IGNORED and not _as_before(TRAIN_ADDED, k, v)}


def eval_inputs(ec: EvalConfig) -> dict[str, Any]:
    d = {k: v for k, v in dataclasses.asdict(ec).items() if not _as_before(EVAL_ADDED, k, v)}
    d.pop("adapter")
    d.pop("seed")  # greedy decoding: the seed does not change completions
    d["judge_resolved"] = resolved_judge(ec.judge)  # an alias such as "default" may point to another judge later
    return d


@functools.lru_cache(maxsize=None)
def resolved_judge(name: str) -> str:
    """The judge an alias stands for and the judges' rules version, or the name when it cannot be built here."""
    try:
        return f"{getattr(judges.get_judge(name), 'name', name)}@{judges.rules_fingerprint()}"
    except MosrError:
        return name  # validation reports the unknown judge


def analyze_inputs(ac: AnalyzeConfig) -> dict[str, Any]:
    d = dataclasses.asdict(ac)
    for k in ("adapter", "eval_run", "cache_dir"):
        d.pop(k)
    return d
