"""``mosr experiment``: every method trained, evaluated and analysed, each step a cached stage.

An experiment is a list of **stages** (train, eval, analyze per method and seed, then the report).
Each stage owns a folder under the experiment folder::

    OUT/stages/train/mosr/seed0/      adapter (mosr train)
    OUT/stages/eval/mosr/seed0/       completions, judgments, metrics (mosr eval)
    OUT/stages/analyze/mosr/seed0/    representation metrics and figures (mosr analyze)
    OUT/report/                       report.md, report.html, figures

and holds ``stage.json`` (the stage's inputs and their hash) and, written last, ``DONE``. A stage is
skipped when its ``DONE`` carries the hash of its current inputs. The inputs are exactly the config
parts the stage depends on, plus the hashes of the stages it reads from, so changing the eval limit
re-runs eval, analysis and report stages but no training, and a crash loses only the stage in
flight (whose inner command resumes where it stopped when it can). A stage whose inputs changed is
wiped and redone.

The whole config is checked (methods, judge, datasets, training and eval keys) before any stage runs.
Result bundles, and experiments run in pieces (``--only``, ``--shard``): :mod:`mosr.experiment_pieces`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mosr import judges
from mosr.analysis_run import DEFAULT_PSEUDO, AnalyzeConfig, run_analyze
from mosr.config import YamlLoadable, from_mapping
from mosr.data import load_dataset
from mosr.errors import ConfigError, MosrError
from mosr.evaluation import EvalConfig, config_tasks, finish_run, run_eval
from mosr.experiment_pieces import parse_shard, prepare, select
from mosr.methods import DEFAULT, UNDEFENDED, VARIANTS, all_methods, get_method
from mosr.report import write_report
from mosr.runs import RunDir, check_run_kind, disk_errors, now_iso
from mosr.stage_inputs import analyze_inputs, eval_inputs, train_inputs
from mosr.stages import DONE_FILE, STAGE_FILE, Stage, StageReport, config_hash, run_stages, stage_done  # noqa: F401 (re-exported)
from mosr.training import TrainConfig, train

log = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
SWEEP_KEYS = {"alpha": "alpha", "tau": "oalw_tau", "oalw_tau": "oalw_tau"}
_SET_BY_EXPERIMENT = {"model", "adapter", "seed", "method", "eval_run", "compare_model", "cache_dir"}


# ------------------------------------------------------------------------------------------ config
@dataclass
class SweepConfig:
    """One training knob varied over values; the report draws each method's frontier over it."""

    param: str = "alpha"  # alpha (schedule scale) or tau (OALW temperature, key oalw_tau)
    values: list[float] = field(default_factory=list)
    methods: list[str] = field(default_factory=lambda: ["rr", "mosr"])

    def __post_init__(self) -> None:
        if self.param not in SWEEP_KEYS:
            raise ConfigError(f"sweep.param: unknown parameter {self.param!r}; choose alpha or tau")
        if not self.values:
            raise ConfigError("sweep.values is empty; give at least two values, e.g. [2, 5, 10, 20]")
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0 for v in self.values):
            raise ConfigError(f"sweep.values must be positive numbers, got {self.values}")
        if not self.methods:
            raise ConfigError("sweep.methods is empty")

    @property
    def train_key(self) -> str:
        return SWEEP_KEYS[self.param]


@dataclass
class ExperimentConfig(YamlLoadable):
    """What ``mosr experiment`` runs. Loaded from YAML; unknown keys fail."""

    config_name: ClassVar[str] = "experiment"

    model: str = "default"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT))
    seeds: list[int] = field(default_factory=lambda: [0])
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig keys for every method
    method_train: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-method TrainConfig keys
    eval: dict[str, Any] = field(default_factory=dict)  # EvalConfig keys (suites, limit, judge, max_new_tokens...)
    analyze: dict[str, Any] | None = field(default_factory=dict)  # AnalyzeConfig keys; null = no analysis
    sweep: SweepConfig | None = None
    title: str = "mosr experiment"
    bundles: str | None = None  # result bundles folder: finished stages are exported there and read back (docs/EXPERIMENT.md)

    def __post_init__(self) -> None:
        if isinstance(self.sweep, dict):
            self.sweep = _from_mapping(SweepConfig, self.sweep, "sweep.")
        if isinstance(self.methods, str):
            self.methods = [self.methods]
        if isinstance(self.seeds, int) and not isinstance(self.seeds, bool):
            self.seeds = [self.seeds]
        if not self.methods:
            raise ConfigError("methods is empty; list at least one of " + ", ".join(DEFAULT))
        known = known_methods()
        for where, names in (("methods", self.methods), ("sweep.methods", self.sweep.methods if self.sweep else [])):
            for name in names:
                if name not in known:
                    raise ConfigError(f"{where}: unknown method {name!r}; choose from {', '.join(known)}")
        for name in self.method_train:
            if name not in known:
                raise ConfigError(f"method_train: unknown method {name!r}; choose from {', '.join(known)}")
        if self.sweep and UNDEFENDED in self.sweep.methods:
            raise ConfigError("sweep.methods: the undefended model has nothing to sweep; remove it")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"methods lists a method twice: {self.methods}")
        if not self.seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ConfigError(f"seeds must be a non-empty list of integers >= 0, got {self.seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds lists a seed twice: {self.seeds}")
        for section in ("train", "eval", "analyze"):
            value = getattr(self, section)
            if value is None and section == "analyze":
                continue
            if not isinstance(value, dict):
                raise ConfigError(f"{section}: expected a mapping of keys, got {type(value).__name__}")
            taken = sorted(_SET_BY_EXPERIMENT & set(value))
            if taken:
                raise ConfigError(f"{section}.{taken[0]} is set by the experiment itself; use the top-level keys model, methods and seeds")
        for name, keys in self.method_train.items():
            if not isinstance(keys, dict):
                raise ConfigError(f"method_train.{name}: expected a mapping of training keys")
            taken = sorted(_SET_BY_EXPERIMENT & set(keys))
            if taken:
                raise ConfigError(f"method_train.{name}.{taken[0]} is set by the experiment itself")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _from_mapping(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    return from_mapping(cls, data, what="experiment", prefix=prefix)


def known_methods() -> tuple[str, ...]:
    """Every registered method (:mod:`mosr.methods`): ``undefended``, the trained methods and their variants."""
    return tuple(m.name for m in all_methods())


# --------------------------------------------------------------------------------------- runners
@dataclass
class Runners:
    """The commands the stages call. Tests swap in fakes; defaults are the real ones."""

    train: Callable[[Any, Path], Any]
    evaluate: Callable[[Any, Path], Any]
    analyze: Callable[[Any, Path], Any]
    rejudge: Callable[[str, Path], Any] = field(default=lambda judge, out: _rejudge(judge, out))  # judge, eval folder


def _train(config: TrainConfig, out: Path) -> Any:
    return train(config, out, resume="auto")  # a half-done stage continues from its last checkpoint


def _evaluate(config: EvalConfig, out: Path) -> Any:
    return run_eval(config, out)


def _analyze(config: AnalyzeConfig, out: Path) -> Any:
    return run_analyze(config, out)


def _rejudge(judge: str, out: Path) -> Any:
    """Judge an eval stage's stored completions again (a bundle's, when the judge changed): no model is loaded."""
    return finish_run(RunDir(out, create=False), judge)


def default_runners() -> Runners:
    return Runners(train=_train, evaluate=_evaluate, analyze=_analyze)


# ------------------------------------------------------------------------------------------ plan
@dataclass
class Variant:
    """One trained configuration: a method, optionally at one sweep value."""

    method: str
    sweep_param: str | None = None
    sweep_value: float | None = None

    @property
    def slug(self) -> str:
        if self.sweep_param is None:
            return self.method
        return f"{self.method}/{self.sweep_param}={_num(self.sweep_value)}"

    @property
    def label(self) -> str:
        if self.sweep_param is None:
            return self.method
        return f"{self.method} {self.sweep_param}={_num(self.sweep_value)}"


def _num(x: float | None) -> str:
    return f"{x:g}" if x is not None else ""


@dataclass
class Plan:
    stages: list[Stage]
    entries: list[dict[str, Any]]  # one per (variant, seed): where its train/eval/analyze results live


def train_config(cfg: ExperimentConfig, variant: Variant, seed: int) -> TrainConfig:
    """The :class:`~mosr.training.config.TrainConfig` of one variant and seed (validated)."""
    named = VARIANTS.get(variant.method)
    if named is None:
        data = {**cfg.train, **cfg.method_train.get(variant.method, {}), "method": variant.method, "model": cfg.model, "seed": seed}
    else:  # a named variant: the base method's keys, then the variant's settings, then the variant's own keys
        data = {**cfg.train, **cfg.method_train.get(named.base, {}), **named.overrides, **cfg.method_train.get(variant.method, {}),
                "method": named.base, "model": cfg.model, "seed": seed}
    if variant.sweep_param is not None and cfg.sweep is not None:
        data[cfg.sweep.train_key] = variant.sweep_value
    try:
        return TrainConfig.from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"training config of {variant.label} (seed {seed}): {exc}") from exc


def eval_config(cfg: ExperimentConfig, adapter: str | None, seed: int) -> EvalConfig:
    data = dict(cfg.eval)
    data.setdefault("suites", ["all"])
    return from_mapping(EvalConfig, data, what="eval", hidden=_SET_BY_EXPERIMENT,
                        extra={"model": cfg.model, "adapter": adapter, "seed": seed})


def analyze_config(cfg: ExperimentConfig, adapter: str | None, eval_run: str | None, seed: int, cache_dir: str) -> AnalyzeConfig:
    return from_mapping(AnalyzeConfig, dict(cfg.analyze or {}), what="analyze", hidden=_SET_BY_EXPERIMENT,
                        extra={"model": cfg.model, "adapter": adapter, "eval_run": eval_run, "seed": seed, "cache_dir": cache_dir})


def _pseudo_from_eval(cfg: ExperimentConfig, ec: EvalConfig) -> bool:
    """Split pseudo-malicious prompts by verdicts only when the eval run judged some of them."""
    pseudo = set((cfg.analyze or {}).get("pseudo", DEFAULT_PSEUDO))
    return any(t.dataset in pseudo and t.attack == "none" for t in config_tasks(ec))


def build_plan(cfg: ExperimentConfig, root: Path, runners: Runners | None = None) -> Plan:
    """Every stage of the experiment, in run order, with its inputs. Builds (validates) every config."""
    runners = runners or default_runners()
    root = Path(root)
    cache_dir = str(root / "cache" / "representations")
    variants = [Variant(m) for m in cfg.methods]
    if cfg.sweep is not None:
        variants += [Variant(m, cfg.sweep.param, float(v)) for m in cfg.sweep.methods for v in cfg.sweep.values]
    stages: list[Stage] = []
    by_key: dict[tuple[str, str], str] = {}  # (kind, hash) -> stage folder: identical stages run once
    entries: list[dict[str, Any]] = []

    def add(stage: Stage) -> str:
        existing = by_key.get((stage.kind, stage.key))
        if existing is not None:
            return existing
        by_key[(stage.kind, stage.key)] = stage.name
        stages.append(stage)
        return stage.name

    for variant in variants:
        seeds = cfg.seeds if get_method(variant.method).trains else [cfg.seeds[0]]  # nothing random without training
        for seed in seeds:
            entry: dict[str, Any] = {"method": variant.method, "label": variant.label, "sweep_param": variant.sweep_param,
                                     "sweep_value": variant.sweep_value, "seed": seed, "train": None, "eval": None, "analyze": None}
            upstream: dict[str, Any] = {"train": None}
            adapter: str | None = None
            if get_method(variant.method).trains:
                tc = train_config(cfg, variant, seed)
                train_stage = Stage(f"stages/train/{variant.slug}/seed{seed}", "train", {"train": train_inputs(tc)},
                                    lambda out, tc=tc: runners.train(tc, out), label=f"train {variant.label} seed {seed}")
                name = add(train_stage)
                adapter = str(root / name)
                upstream = {"train": train_stage.key}
                entry["train"] = name
            needs = (entry["train"],) if entry["train"] else ()
            ec = eval_config(cfg, adapter, seed)
            eval_stage = Stage(f"stages/eval/{variant.slug}/seed{seed}", "eval", {"eval": eval_inputs(ec), **upstream},
                               lambda out, ec=ec: runners.evaluate(ec, out), label=f"eval {variant.label} seed {seed}",
                               reusable_when_only=(("eval", "judge"), ("eval", "judge_resolved")),  # a new judge re-judges the stored completions
                               needs=needs)
            entry["eval"] = add(eval_stage)
            if cfg.analyze is not None and variant.sweep_param is None:
                eval_run = str(root / entry["eval"]) if _pseudo_from_eval(cfg, ec) else None
                ac = analyze_config(cfg, adapter, eval_run, seed, cache_dir)
                inputs = {"analyze": analyze_inputs(ac), **upstream, "eval": eval_stage.key if eval_run else None}
                entry["analyze"] = add(Stage(f"stages/analyze/{variant.slug}/seed{seed}", "analyze", inputs,
                                             lambda out, ac=ac: runners.analyze(ac, out), label=f"analyze {variant.label} seed {seed}",
                                             needs=needs + ((entry["eval"],) if eval_run else ())))
            entries.append(entry)
    return Plan(stages, entries)


def validate(cfg: ExperimentConfig, root: Path | None = None) -> Plan:
    """Check everything that can be checked without running: methods, keys, judge, datasets."""
    plan = build_plan(cfg, Path(root or "."), Runners(train=_never, evaluate=_never, analyze=_never))
    _check_judge(str(cfg.eval.get("judge", "default")))
    _check_datasets(cfg, plan)
    return plan


def _never(*_: Any) -> Any:  # pragma: no cover - validation never runs stages
    raise AssertionError("validation must not run stages")


def _check_judge(name: str) -> None:
    judges.get_judge(name)  # looked up when called, so that a judge registered later is found


def _check_datasets(cfg: ExperimentConfig, plan: Plan) -> None:
    """Every dataset spec named anywhere in the config must load (name, split, file)."""
    specs: dict[str, str] = {}
    for key in ("pair_datasets", "harmful_datasets", "retain_datasets", "pseudo_datasets"):
        for source in [cfg.train, *cfg.method_train.values()]:
            for spec in source.get(key, []) or []:
                specs.setdefault(spec, f"train.{key}")
    if cfg.analyze is not None:
        for key in ("benign", "malicious", "pseudo"):
            for spec in cfg.analyze.get(key, []) or []:
                specs.setdefault(spec, f"analyze.{key}")
    for spec, where in specs.items():
        try:
            load_dataset(spec, limit=1)
        except MosrError as exc:
            raise ConfigError(f"{where}: {exc}") from exc


# ------------------------------------------------------------------------------------------- run
@dataclass
class ExperimentResult:
    out: Path
    report_html: Path
    report_md: Path
    stages: list[StageReport]
    seconds: float
    missing: list[str] = field(default_factory=list)  # stages left to other runs (--only, --shard): no report yet

    def summary(self) -> str:
        """Stages run, reused and restored, and where the report is (or which stages it waits for)."""
        count = {k: sum(s.status == k for s in self.stages) for k in ("ran", "cached", "bundle", "rejudged")}
        done = len(self.stages) - len(self.missing)
        text = (f"{done} stages: {count['ran']} run, {count['cached']} reused from the cache, {count['bundle']} restored from "
                f"bundles, {count['rejudged']} re-judged from bundles ({self.seconds:.0f} s)\n")
        if self.missing:
            return text + (f"{len(self.missing)} stages left to other runs: {', '.join(self.missing)}\n"
                           "no report yet: it is written once every stage is finished here or bundled")
        return text + f"report: {self.report_html}\n        {self.report_md} (markdown)"


def run_experiment(cfg: ExperimentConfig, out: str | Path, *, runners: Runners | None = None, command: str | None = None,
                   only: Sequence[str] = (), shard: str | tuple[int, int] | None = None) -> ExperimentResult:
    """Validate, run (or resume) every stage (``only`` / ``shard``: some of them), then write the report."""
    start = time.perf_counter()
    root = Path(out)
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    required = select(validate(cfg, root).stages, only, shard)  # fails before anything is written
    check_run_kind(root, "experiment")
    run = RunDir(root)
    selection = {"only": list(only), "shard": "/".join(map(str, shard)) if shard else None}
    with run.lock("mosr experiment"):
        return _run_accepted(cfg, root, run, runners or default_runners(), command, start, required, selection)


def _run_accepted(cfg: ExperimentConfig, root: Path, run: RunDir, runners: Runners, command: str | None,
                  start: float, required: set[str], selection: dict[str, Any]) -> ExperimentResult:
    plan = build_plan(cfg, root, runners)
    bundles = Path(cfg.bundles) if cfg.bundles else None
    with disk_errors(root):
        pieces = prepare(plan.stages, root, bundles, required, runners.rejudge)
        run.write_json("experiment.json", cfg.to_dict())
        run.write_metadata(command="experiment", config=cfg.to_dict(), seed=cfg.seeds[0],
                           extra={"stages": [s.name for s in plan.stages]})  # describes the current config

    def report_action(folder: Path) -> None:
        write_report(collect_results(root, plan.entries), folder, title=cfg.title, config=cfg.to_dict(), command=command)

    report_inputs = {"stages": {s.name: s.key for s in plan.stages}, "entries": plan.entries, "title": cfg.title,
                     "command": command, "report_version": _report_version()}
    report_stage = Stage("report", "report", report_inputs,
                         report_action, label="report")
    stages = [*pieces.stages, *([] if pieces.missing else [report_stage])]
    reports = pieces.statuses(run_stages(stages, root, on_done=pieces.export), {s.name: s.kind for s in plan.stages})
    seconds = time.perf_counter() - start
    with disk_errors(root):
        run.write_json(RESULTS_FILE, {"entries": plan.entries, "stages": [dataclasses.asdict(r) for r in reports],
                                      "bundles": str(bundles) if bundles else None, **selection, "missing": pieces.missing,
                                      "seconds": round(seconds, 1), "finished": now_iso()})
    return ExperimentResult(root, root / "report" / "report.html", root / "report" / "report.md", reports, seconds,
                            missing=pieces.missing)


def _report_version() -> str:
    """Hash of the report code, so a changed report layout redraws the report (and nothing else)."""
    path = Path(__file__).with_name("report.py")
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12] if path.is_file() else "none"


def collect_results(root: Path, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries with their eval metrics and analysis metrics loaded (input of :mod:`mosr.report`)."""
    out = []
    for e in entries:
        rec = dict(e)
        eval_dir = root / e["eval"]
        rec["eval_metrics"] = json.loads((eval_dir / "metrics.json").read_text(encoding="utf-8"))
        if e.get("analyze"):
            folder = root / e["analyze"]
            rec["analysis_dir"] = str(folder)
            metrics = folder / "metrics.json"
            rec["analysis"] = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else None
        if e.get("train"):
            rec["adapter_dir"] = str(root / e["train"])
        out.append(rec)
    return out
