"""An experiment in pieces: result bundles as finished stages, and ``--only`` / ``--shard`` selections.

With a bundles folder (``--bundles DIR`` or the config key ``bundles``) every finished train, eval and
analyze stage is exported to ``DIR/<kind>/<variant>/seed<k>`` (:mod:`mosr.bundles`), and a stage whose
bundle there carries the stage's current hash counts as finished: the bundle is verified and unpacked
into the stage folder instead of running the stage. An eval stage whose bundle differs only by the
judge is re-judged from the bundle's completions, without the model. An analyze stage whose bundle differs
only by the eval stage it read is kept when the verdicts it split the pseudo-malicious prompts by are
the same in the new eval (a judge change that moves none of them); otherwise it must run again.

Bundles hold no weights. A stage that must run here and reads a train stage's adapter (eval,
analyze) therefore needs that train stage finished in this folder, not restored from a bundle; the
run otherwise stops before restoring or running any stage, and names both (it never retrains silently).

``--only PATTERN`` (glob on stage names, e.g. ``'eval/*'``, ``'*/rr/*'``) and ``--shard I/N`` choose the
stages this run must finish, plus the stages they read; the rest is restored from bundles when
present and otherwise left to the other runs. ``--shard`` deals out whole chains (a train stage
with its eval and analyze stages) round-robin in plan order, so the shards of one config partition
its stages and no shard needs another's weights. The report is written once every stage is finished
or bundled.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosr.bundles import FILES, export_bundle, is_bundle, read_bundle_info, unpack_bundle
from mosr.errors import ConfigError, RunError
from mosr.runs import atomic_write_text, dumps, now_iso
from mosr.stages import DONE_FILE, STAGE_FILE, Stage, StageReport, reusable_inputs, stage_done

log = logging.getLogger(__name__)


def short_name(name: str) -> str:
    """``stages/eval/rr/seed0`` -> ``eval/rr/seed0``: the stage's path below a bundles folder."""
    return name.removeprefix("stages/")


def bundle_path(bundles: Path, name: str) -> Path:
    return bundles / short_name(name)


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``: the second of three shards."""
    i, slash, n = str(text).partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index = count = 0
    if not slash or count < 1 or not 1 <= index <= count:
        raise ConfigError(f"--shard expects I/N with 1 <= I <= N, e.g. 1/2, got {text!r}")
    return index, count


def chains(stages: Sequence[Stage]) -> dict[str, int]:
    """Stage name -> index of its chain (the stage it descends from through ``needs``), in plan order."""
    by_name = {s.name: s for s in stages}

    def root(name: str) -> str:
        needs = by_name[name].needs
        return root(needs[0]) if needs else name

    order: dict[str, int] = {}
    return {s.name: order.setdefault(root(s.name), len(order)) for s in stages}


def select(stages: Sequence[Stage], only: Sequence[str] = (), shard: tuple[int, int] | None = None) -> set[str]:
    """The stages a run must finish: those matching ``only`` and in ``shard``, plus every stage they read."""
    names = [s.name for s in stages]
    chosen = set(names)
    if only:
        chosen = {n for n in names if any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(short_name(n), p) for p in only)}
        if not chosen:
            raise ConfigError(f"--only {' '.join(only)} matches no stage; the stages are: {', '.join(map(short_name, names))}")
    if shard is not None:
        index, count = shard
        chain = chains(stages)
        chosen = {n for n in chosen if chain[n] % count == index - 1}
    by_name = {s.name: s for s in stages}
    todo = list(chosen)
    while todo:
        for need in by_name[todo.pop()].needs:
            if need not in chosen:
                chosen.add(need)
                todo.append(need)
    return chosen


@dataclass
class Pieces:
    """What this run does with each stage: the stages to hand to ``run_stages``, and how each was obtained."""

    stages: list[Stage]  # in plan order: finished here, restored from a bundle, to re-judge or to run
    bundles: Path | None
    restored: set[str] = field(default_factory=set)
    rejudged: set[str] = field(default_factory=set)
    relinked: set[str] = field(default_factory=set)  # analyze stages kept because the verdicts they read did not change
    missing: list[str] = field(default_factory=list)  # neither finished nor bundled, left to another run

    def export(self, stage: Stage, folder: Path) -> None:
        """Export a finished stage to the bundles folder, unless a bundle with its hash is there already."""
        if self.bundles is None or stage.kind not in FILES:
            return
        path = bundle_path(self.bundles, stage.name)
        if _bundle_stage(path).get("hash") == stage.key:
            return
        export_bundle(folder, path)
        log.info("stage %s: exported to %s", stage.name, path)

    def statuses(self, reports: list[StageReport], kinds: dict[str, str]) -> list[StageReport]:
        """``run_stages`` reports with ``bundle``, ``rejudged`` and ``missing`` filled in."""
        out = []
        for r in reports:
            status = "bundle" if r.name in self.restored or r.name in self.relinked else "rejudged" if r.name in self.rejudged else r.status
            out.append(dataclasses.replace(r, status=status))  # type: ignore[arg-type]
        return out + [StageReport(name, kinds[name], "missing", 0.0) for name in self.missing]


def _bundle_stage(path: Path | None) -> dict[str, Any]:
    """The stage a bundle was exported from (``hash``, ``inputs``...), or {} when there is no readable bundle."""
    if path is None or not is_bundle(path):
        return {}
    try:
        return read_bundle_info(path).get("stage") or {}
    except RunError:
        return {}  # a damaged bundle.json: export replaces it


def _from_bundle(folder: Path) -> str | None:
    try:
        return json.loads((folder / STAGE_FILE).read_text(encoding="utf-8")).get("bundle")
    except (OSError, ValueError):
        return None


def prepare(stages: Sequence[Stage], root: Path, bundles: Path | None, required: set[str],
            rejudge: Callable[[str, Path], Any]) -> Pieces:
    """Decide for every stage, check that each stage to run has its inputs here, then restore the bundles."""
    source: dict[str, str] = {}  # name -> here | bundle-here | bundle | rejudge | relink | run | missing
    kinds = {s.name: s.kind for s in stages}
    for stage in stages:
        folder, path = root / stage.name, bundle_path(bundles, stage.name) if bundles else None
        bundled = _bundle_stage(path)  # bundle.json read once per stage
        if stage_done(folder, stage.key):
            source[stage.name] = "bundle-here" if _from_bundle(folder) else "here"
        elif bundled.get("hash") == stage.key:
            source[stage.name] = "bundle"
        elif stage.name in required and bundled.get("hash") and reusable_inputs(stage, bundled.get("inputs")):
            source[stage.name] = "rejudge"
        elif stage.name in required and _only_eval_changed(stage, bundled.get("inputs"), source, kinds):
            source[stage.name] = "relink"
        else:
            source[stage.name] = "run" if stage.name in required else "missing"
    for stage in stages:
        if source[stage.name] != "run":
            continue
        for need in stage.needs:
            if kinds[need] == "train" and source[need] in ("bundle", "bundle-here"):
                where = bundle_path(bundles, need) if bundles else root / need
                raise RunError(
                    f"stage {short_name(stage.name)} must run here and needs the adapter weights of stage {short_name(need)}, "
                    f"which is only available as the bundle {where} (bundles hold no weights). Either run "
                    f"{short_name(stage.name)} on the machine that trained {short_name(need)} (same --out), or retrain it here: "
                    f"delete {where} and {root / need} and rerun")
    pieces = Pieces([], bundles)
    for stage in stages:
        how = source[stage.name]
        if how == "missing":
            pieces.missing.append(stage.name)
            continue
        if how == "bundle":
            _restore(stage, root / stage.name, bundle_path(bundles, stage.name), done=True)  # type: ignore[arg-type]
            pieces.restored.add(stage.name)
        elif how == "rejudge":
            _restore(stage, root / stage.name, bundle_path(bundles, stage.name), done=False)  # type: ignore[arg-type]
            judge = str(stage.inputs["eval"]["judge"])
            stage = dataclasses.replace(stage, action=lambda out, judge=judge: rejudge(judge, out))
            pieces.rejudged.add(stage.name)
        elif how == "relink":
            _restore(stage, root / stage.name, bundle_path(bundles, stage.name), done=False, as_stage=True)  # type: ignore[arg-type]
            evals = [n for n in stage.needs if kinds[n] == "eval"]
            # analysing again needs the adapter (if any) trained in this folder, not a bundle's
            elsewhere = [n for n in stage.needs if kinds[n] == "train" and source[n] not in ("here", "run")]
            fallback = None if elsewhere else _analyse_again(stage, pieces)
            stage = dataclasses.replace(stage, action=lambda out, ev=root / evals[0], st=stage, run=fallback: _check_pseudo_verdicts(st, out, ev, run))
            pieces.relinked.add(stage.name)
        pieces.stages.append(stage)
    return pieces


def _only_eval_changed(stage: Stage, old: Any, source: dict[str, str], kinds: dict[str, str]) -> bool:
    """An analyze stage whose bundled inputs differ from its own only by the eval stage it read, that eval
    stage being finished, restored or re-judged here (so its verdicts can be compared without a model)."""
    if stage.kind != "analyze" or not isinstance(old, dict) or not old.get("eval") or not stage.inputs.get("eval"):
        return False
    evals = [n for n in stage.needs if kinds.get(n) == "eval" and source.get(n) in ("bundle", "bundle-here", "rejudge", "here")]
    same = {k: v for k, v in json.loads(json.dumps(old, default=str)).items() if k != "eval"}
    return bool(evals) and same == {k: v for k, v in json.loads(json.dumps(stage.inputs, default=str)).items() if k != "eval"}


def _analyse_again(stage: Stage, pieces: Pieces) -> Callable[[Path], Any]:
    """The stage's own action, reported as run (not as restored) when the relink falls back to it."""
    def run(out: Path) -> Any:
        pieces.relinked.discard(stage.name)
        return stage.action(out)
    return run


def _check_pseudo_verdicts(stage: Stage, folder: Path, eval_folder: Path, run: Callable[[Path], Any] | None) -> Any:
    """Keep a restored analysis when every pseudo-malicious prompt it split has the same verdict in the new eval
    run; otherwise run the analysis again (``run``, when its adapter was trained here) or stop and say why."""
    import csv

    from mosr.analysis_run import read_verdicts

    with open(folder / "boundary_scores.csv", encoding="utf-8", newline="") as fh:
        used = {(r["dataset"], r["sample_id"]): r["verdict"] for r in csv.DictReader(fh) if r["group"] == "pseudo"}
    now, _ = read_verdicts(eval_folder)
    changed = sorted(k for k, v in used.items() if now.get(k) != v)
    if changed and run is not None:
        log.info("stage %s: %d of the pseudo-malicious verdicts it read changed; analysing again", stage.name, len(changed))
        return run(folder)
    if changed:
        raise RunError(
            f"stage {short_name(stage.name)} split {len(used)} pseudo-malicious prompts by the verdicts of {short_name(str(eval_folder))}, "
            f"and {len(changed)} of those verdicts changed with the new judge (e.g. {changed[0][0]}/{changed[0][1]}: "
            f"{used[changed[0]]} -> {now.get(changed[0])}), so the analysis must run again, and that needs its adapter: "
            "run the experiment on the machine that trained it (same --out), or delete the train stage's bundle and folder to retrain it here")
    log.info("stage %s: the %d pseudo-malicious verdicts it read are unchanged; kept", stage.name, len(used))
    return None


def _restore(stage: Stage, folder: Path, bundle: Path, *, done: bool, as_stage: bool = False) -> None:
    """Unpack ``bundle`` into the stage folder; ``done``: as the finished stage, else as the bundle's older stage to reuse
    (``as_stage``: recorded under the stage's new inputs, so that running the stage keeps the folder)."""
    staging = folder.with_name(folder.name + ".restoring")
    if staging.exists():
        shutil.rmtree(staging)  # left by an interrupted restore
    try:
        info = unpack_bundle(bundle, staging)  # verified before the stage folder is touched
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if folder.exists():
        shutil.rmtree(folder)  # not finished with these inputs: the bundle replaces it
    staging.rename(folder)
    old = info.get("stage") or {}
    atomic_write_text(folder / STAGE_FILE, dumps({
        "name": stage.name, "kind": stage.kind, "hash": stage.key if done or as_stage else old.get("hash"),
        "inputs": stage.inputs if done or as_stage else old.get("inputs"), "bundle": str(bundle), "restored": now_iso(),
        "seconds": old.get("seconds", 0.0)}) + "\n")
    if done:
        atomic_write_text(folder / DONE_FILE, stage.key + "\n")
    what = "restored" if done else "restored, to check against the new verdicts" if as_stage else "completions restored for re-judging"
    log.info("stage %s: %s from %s", stage.name, what, bundle)
