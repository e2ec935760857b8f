"""Cached stages: a folder per step, its inputs and their hash in ``stage.json``, and ``DONE`` written last.

A stage is skipped when its ``DONE`` carries the hash of its current inputs; a stage whose inputs
changed is wiped and redone (or kept for the command to resume, where only the inputs named in
``reusable_when_only`` changed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mosr.progress import progress
from mosr.runs import atomic_write_text, disk_errors, dumps, now_iso

log = logging.getLogger(__name__)

STAGE_FILE = "stage.json"
DONE_FILE = "DONE"
StageKind = Literal["train", "eval", "analyze", "report"]


@dataclass
class Stage:
    """One cached step. ``inputs`` are exactly the config parts (and upstream hashes) it depends on."""

    name: str  # folder below OUT, e.g. "stages/eval/mosr/seed0"
    kind: StageKind
    inputs: dict[str, Any]
    action: Callable[[Path], Any] = field(repr=False, compare=False)
    label: str = ""
    # inputs whose change keeps the half-done or finished folder for the command to reuse (eval: the judge)
    reusable_when_only: tuple[tuple[str, str], ...] = ()
    needs: tuple[str, ...] = ()  # names of the stages whose folders this one reads (eval: its train stage)

    @property
    def key(self) -> str:
        return config_hash(self.inputs)


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_done(folder: Path, key: str) -> bool:
    """A stage is finished when ``DONE`` exists and carries the hash of its current inputs."""
    done = folder / DONE_FILE
    return done.is_file() and done.read_text(encoding="utf-8").strip() == key


def _prepare(folder: Path, stage: Stage) -> None:
    """Keep a half-done folder with the same inputs (its command resumes); wipe one with other inputs."""
    info = folder / STAGE_FILE
    if folder.exists():
        same = False
        if info.is_file():
            try:
                same = json.loads(info.read_text(encoding="utf-8")).get("hash") == stage.key
            except (json.JSONDecodeError, OSError):
                same = False
        if not same and _reusable(info, stage):
            log.info("stage %s: only %s changed, reusing its folder", stage.name, stage.reusable_when_only)
        elif not same:
            log.info("stage %s: inputs changed, redoing it", stage.name)
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DONE_FILE).unlink(missing_ok=True)
    atomic_write_text(info, dumps({"name": stage.name, "kind": stage.kind, "hash": stage.key, "inputs": stage.inputs,
                                   "started": now_iso()}) + "\n")


def _reusable(info: Path, stage: Stage) -> bool:
    """True when the folder's old inputs differ from the new ones only at the ``reusable_when_only`` keys."""
    if not stage.reusable_when_only or not info.is_file():
        return False
    try:
        old = json.loads(info.read_text(encoding="utf-8")).get("inputs")
    except (json.JSONDecodeError, OSError):
        return False
    return reusable_inputs(stage, old)


def reusable_inputs(stage: Stage, old: Any) -> bool:
    """True when ``old`` inputs differ from the stage's only at its ``reusable_when_only`` keys (eval: the judge)."""
    if not stage.reusable_when_only or old is None:
        return False

    def strip(inputs: Any) -> Any:
        inputs = json.loads(json.dumps(inputs, default=str))
        for section, key in stage.reusable_when_only:
            if isinstance(inputs, dict) and isinstance(inputs.get(section), dict):
                inputs[section].pop(key, None)
        return inputs

    return strip(old) == strip(stage.inputs)


def _finish(folder: Path, stage: Stage, seconds: float) -> None:
    info = json.loads((folder / STAGE_FILE).read_text(encoding="utf-8"))
    info.update(finished=now_iso(), seconds=round(seconds, 1))
    atomic_write_text(folder / STAGE_FILE, dumps(info) + "\n")
    atomic_write_text(folder / DONE_FILE, stage.key + "\n")  # last: the stage counts as done only now


@dataclass
class StageReport:
    name: str
    kind: str
    # ran; cached (finished in this folder earlier); bundle (restored from a result bundle);
    # rejudged (completions from a bundle, judged again); missing (left to another machine: --only, --shard)
    status: Literal["cached", "ran", "bundle", "rejudged", "missing"]
    seconds: float  # for a cached stage: how long it took when it ran


def _recorded_seconds(folder: Path) -> float:
    try:
        return float(json.loads((folder / STAGE_FILE).read_text(encoding="utf-8")).get("seconds", 0.0))
    except (OSError, ValueError, TypeError):
        return 0.0


def run_stages(stages: Sequence[Stage], root: Path, *, on_done: Callable[[Stage, Path], Any] | None = None) -> list[StageReport]:
    """Run the stages in order, skipping finished ones; one progress bar over all of them.

    ``on_done(stage, folder)`` is called after each stage that is finished, run now or cached.
    """
    reports: list[StageReport] = []
    bar = progress(total=len(stages), desc="experiment", unit="stage", position=0)
    try:
        for i, stage in enumerate(stages, 1):
            folder = root / stage.name
            bar.set_description(f"stage {i}/{len(stages)} {stage.label or stage.name}")
            if stage_done(folder, stage.key):
                log.info("stage %d/%d %s: cached", i, len(stages), stage.name)
                reports.append(StageReport(stage.name, stage.kind, "cached", _recorded_seconds(folder)))
                if on_done is not None:
                    on_done(stage, folder)
                bar.update(1)
                continue
            log.info("stage %d/%d %s: running", i, len(stages), stage.name)
            start = time.perf_counter()
            with disk_errors(folder):
                _prepare(folder, stage)
                stage.action(folder)
                seconds = time.perf_counter() - start
                _finish(folder, stage, seconds)
            reports.append(StageReport(stage.name, stage.kind, "ran", seconds))
            if on_done is not None:
                on_done(stage, folder)
            bar.update(1)
    finally:
        bar.close()
    return reports
