"""The representation analysis behind ``mosr analyze``: where over-refused prompts sit.

Extracts pooled representations of benign, malicious and pseudo-malicious prompts (optionally split
by what the model did in a ``mosr eval`` run), computes the per-layer metrics of
:mod:`mosr.analysis`, and writes ``metrics.json``, ``boundary_scores.csv``, figures, ``report.md``,
a self-contained ``report.html`` and ``run.json`` into the run folder (figures and report:
:mod:`mosr.analysis_report`).
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from mosr import analysis_report
from mosr.analysis import AnalysisConfig, LayerResult, analyze_layers, summarise_scores
from mosr.config import YamlLoadable
from mosr.data import Sample, load_dataset, samples_hash
from mosr.distributed import ProcessGroup, process_group
from mosr.errors import ConfigError, DataError
from mosr.models import LoadedModel, attach_adapter, check_layers, load_model, num_layers
from mosr.report_html import write_html_report
from mosr.representations import POOLINGS, extract
from mosr.records import METRICS, read_judgments
from mosr.runs import RunDir, check_run_kind

log = logging.getLogger(__name__)

DEFAULT_BENIGN = ("self-instruct:test",)
DEFAULT_MALICIOUS = ("advbench:test", "jbb-harmful", "strongreject")
DEFAULT_PSEUDO = ("or-bench-hard:test", "xstest-safe")
REFUSED_VERDICTS = {"refusal", "partial", "gibberish"}
ANSWERED_VERDICTS = {"compliance"}
GROUP_LABEL = {"benign": "benign", "malicious": "malicious", "pseudo": "pseudo-malicious"}


@dataclass(frozen=True)
class AnalyzeConfig(YamlLoadable):
    """What ``mosr analyze`` extracts and compares."""

    config_name: ClassVar[str] = "analyze"

    model: str = "default"
    adapter: str | None = None  # compare base vs base+adapter
    compare_model: str | None = None  # compare with a second model
    eval_run: str | None = None  # split pseudo-malicious prompts by the verdicts of this eval run
    benign: tuple[str, ...] = DEFAULT_BENIGN
    malicious: tuple[str, ...] = DEFAULT_MALICIOUS
    pseudo: tuple[str, ...] = DEFAULT_PSEUDO
    layers: tuple[int, ...] | None = None  # None: every layer
    pooling: str = "last"
    limit: int | None = 150  # prompts per group
    plot_layers: tuple[int, ...] | None = None  # None: 4 layers at 1/4, 1/2, 3/4 and full depth
    projection: str = "pca"  # pca, or tsne (adds a t-SNE figure next to the PCA one)
    batch_size: int = 16
    system: str | None = None
    folds: int = 5
    k: int = 10
    seed: int = 0
    cache_dir: str | None = None  # default: OUT/representations

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        if self.projection not in ("pca", "tsne"):
            raise ConfigError(f"unknown projection {self.projection!r}; choose pca or tsne")
        if self.limit is not None and self.limit < self.folds:
            raise ConfigError(f"--limit {self.limit} is below the number of folds ({self.folds}); use at least {self.folds}")
        for name in ("benign", "malicious", "pseudo"):
            if not getattr(self, name):
                raise ConfigError(f"the {name} group has no dataset; pass at least one spec to --{name}")
        AnalysisConfig(folds=self.folds, k=self.k, seed=self.seed)


# ------------------------------------------------------------------------------------------ groups
@dataclass
class Prompt:
    group: str  # benign, malicious, pseudo
    spec: str
    sample: Sample
    verdict: str | None = None  # from the eval run, pseudo group only

    @property
    def outcome(self) -> str:
        if self.verdict in REFUSED_VERDICTS:
            return "refused"
        if self.verdict in ANSWERED_VERDICTS:
            return "answered"
        return "unjudged" if self.verdict == "unjudged" else "unknown"

    @property
    def label(self) -> str:
        if self.group != "pseudo" or self.outcome == "unknown":
            return GROUP_LABEL[self.group]
        if self.outcome == "unjudged":
            return "pseudo-malicious unjudged"
        return f"pseudo-malicious {self.outcome}"


def _sample_group(specs: Sequence[str], limit: int | None, seed: int, keep: dict[str, set[str]] | None = None) -> list[tuple[str, Sample]]:
    """Seeded shuffle of each spec, interleaved round-robin, first ``limit``: every spec gets a fair share."""
    pools = []
    for spec in specs:
        samples = load_dataset(spec)
        if keep is not None and spec in keep:
            samples = [s for s in samples if s.id in keep[spec]]
        random.Random(f"{seed}:{spec}").shuffle(samples)
        pools.append([(spec, s) for s in samples])
    out: list[tuple[str, Sample]] = []
    for i in range(max((len(p) for p in pools), default=0)):
        out.extend(p[i] for p in pools if i < len(p))
    return out[:limit] if limit is not None else out


def read_verdicts(run: str | Path) -> tuple[dict[tuple[str, str], str], dict[str, Any]]:
    """``(dataset, sample_id) -> verdict`` for plain prompts (attack ``none``) of an eval run, plus counts."""
    records = read_judgments(run, need=("dataset", "attack", "sample_id", "verdict"),
                             hint="--eval-run must be a folder written by `mosr eval`")
    verdicts: dict[tuple[str, str], str] = {}
    attacked = 0
    for rec in records:
        if rec.attack != "none":
            attacked += 1
            continue
        verdicts[(str(rec.dataset), str(rec.sample_id))] = str(rec.verdict)
    return verdicts, {"plain_records": len(verdicts), "attack_records_ignored": attacked}


def load_groups(cfg: AnalyzeConfig) -> tuple[list[Prompt], dict[str, Any]]:
    """The prompts of the three groups (pseudo split by verdicts when an eval run is given)."""
    info: dict[str, Any] = {}
    keep = None
    verdicts: dict[tuple[str, str], str] = {}
    if cfg.eval_run:
        verdicts, counts = read_verdicts(cfg.eval_run)
        datasets = sorted({d for d, _ in verdicts})
        keep = {spec: {sid for d, sid in verdicts if d == spec} for spec in cfg.pseudo if any(d == spec for d in datasets)}
        if not keep:
            raise DataError(
                f"eval run {cfg.eval_run} has no plain-prompt judgments for {', '.join(cfg.pseudo)}; "
                f"it has: {', '.join(datasets) or 'none'}"
            )
        info["eval_run"] = {"path": str(cfg.eval_run), **counts, "pseudo_specs_with_verdicts": sorted(keep)}
    prompts: list[Prompt] = []
    for group in ("benign", "malicious", "pseudo"):
        chosen = _sample_group(getattr(cfg, group), cfg.limit, cfg.seed, keep if group == "pseudo" else None)
        if not chosen:
            raise DataError(f"the {group} group is empty ({', '.join(getattr(cfg, group))}); check the specs and the eval run")
        for spec, s in chosen:
            prompts.append(Prompt(group, spec, s, verdicts.get((spec, s.id)) if group == "pseudo" and verdicts else None))
    info["groups"] = {
        g: {"n": sum(p.group == g for p in prompts), "by_dataset": dict(Counter(p.spec for p in prompts if p.group == g))}
        for g in ("benign", "malicious", "pseudo")
    }
    if cfg.eval_run:
        info["pseudo_outcomes"] = dict(Counter(p.outcome for p in prompts if p.group == "pseudo"))
    return prompts, info


# ---------------------------------------------------------------------------------------- running
@dataclass
class VariantResult:
    name: str
    model: dict[str, Any]
    results: list[LayerResult]
    summaries: list[dict[str, Any]]
    vectors: dict[str, np.ndarray] = field(repr=False, default_factory=dict)  # group -> [n, n_layers, hidden]
    extraction: dict[str, Any] = field(default_factory=dict)
    by_process: list[int] = field(default_factory=list)  # prompts each process extracted (cache hits count nothing)


def _resolve_layers(loaded: Any, layers: tuple[int, ...] | None) -> list[int]:
    return check_layers(loaded.model, list(layers)) if layers is not None else list(range(num_layers(loaded.model)))


def _analyze_variant(name: str, loaded: Any, prompts: list[Prompt], layers: list[int], cfg: AnalyzeConfig, cache: Path,
                     procs: ProcessGroup) -> VariantResult | None:
    """Extract every group's vectors (shared by the processes) and analyse them (main process; others return None)."""
    vecs: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    by_process = [0] * procs.world
    for group in ("benign", "malicious", "pseudo"):  # one cache entry per group: groups are reused across runs
        members = [p for p in prompts if p.group == group]
        reps = extract(
            loaded, [p.sample.prompt for p in members], layers=layers, pooling=cfg.pooling,  # type: ignore[arg-type]
            ids=[f"{p.spec}/{p.sample.id}" for p in members], system=cfg.system, batch_size=cfg.batch_size,
            cache_dir=cache, desc=f"extract {name}: {group}", group=procs,
        )
        vecs[group] = np.asarray(reps.vectors)
        meta[group] = dict(reps.meta)
        by_process = [a + b for a, b in zip(by_process, reps.by_process or [0] * procs.world)]
    if not procs.is_main:
        return None  # the other processes only share the extraction
    outcome = [p.outcome for p in prompts if p.group == "pseudo"]
    results, summaries = analyze_layers(vecs, layers, outcome=outcome, config=AnalysisConfig(folds=cfg.folds, k=cfg.k, seed=cfg.seed))
    specs = np.array([p.spec for p in prompts if p.group == "pseudo"])
    if len(set(specs.tolist())) > 1:
        for res, summary in zip(results, summaries):
            summary["pseudo_by_dataset"] = {spec: summarise_scores(res.scores["pseudo"], specs == spec) for spec in dict.fromkeys(specs.tolist())}
    return VariantResult(name, loaded.describe(), results, summaries, vecs, meta, by_process)


def default_plot_layers(layers: Sequence[int]) -> list[int]:
    """Up to 4 of ``layers`` at about 1/4, 1/2, 3/4 and full depth."""
    ordered = sorted(layers)
    picks = [ordered[max(0, math.ceil(f * len(ordered)) - 1)] for f in (0.25, 0.5, 0.75, 1.0)]
    return list(dict.fromkeys(picks))


def run_analyze(cfg: AnalyzeConfig, out: str | Path, *, loaded: LoadedModel | None = None) -> dict[str, Any]:
    """Run the whole analysis into ``out`` and return the metrics (also written to metrics.json).

    ``loaded`` replaces loading ``cfg.model`` (an adapter in ``cfg.adapter`` is then attached to it).
    Launched on several processes, they share the extraction; the main one analyses and writes the
    folder, and every process returns the metrics.
    """
    procs = process_group()
    check_run_kind(out, "analyze")
    run = RunDir(out)
    prompts, info = load_groups(cfg)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else run.path / "representations"
    loaded = loaded if loaded is not None else load_model(cfg.model, device=procs.device)
    layers = _resolve_layers(loaded, cfg.layers)
    plot_layers = _check_subset(cfg.plot_layers, layers, loaded) if cfg.plot_layers else default_plot_layers(layers)
    variants = [_analyze_variant("base" if (cfg.adapter or cfg.compare_model) else "model", loaded, prompts, layers, cfg, cache, procs)]
    if cfg.adapter:
        attach_adapter(loaded, cfg.adapter)
        variants.append(_analyze_variant("base+adapter", loaded, prompts, layers, cfg, cache, procs))
    del loaded
    if cfg.compare_model:
        other = load_model(cfg.compare_model, device=procs.device)
        other_layers = _resolve_layers(other, cfg.layers)
        if other_layers != layers:
            raise ConfigError(f"--compare-model {cfg.compare_model} has other layers ({len(other_layers)}) than --model; pass --layers valid for both")
        variants.append(_analyze_variant(f"compare ({cfg.compare_model})", other, prompts, layers, cfg, cache, procs))
        del other
    return procs.on_main(lambda: _write_outputs(run, cfg, prompts, info, layers, plot_layers, variants, procs.world))


def _write_outputs(run: RunDir, cfg: AnalyzeConfig, prompts: list[Prompt], info: dict[str, Any], layers: list[int],
                   plot_layers: list[int], variants: list[VariantResult], world: int) -> dict[str, Any]:
    """metrics.json, boundary_scores.csv, figures, reports and run.json (on the main process)."""
    metrics = {
        "config": asdict(cfg),
        "definitions": {
            "h_l": "residual stream after decoder block l (0-based) = hidden_states[l + 1]",
            "probe_accuracy": f"{cfg.folds}-fold stratified CV accuracy of standardise + logistic regression, benign vs malicious; Wilson 95% CI",
            "probe_p": "probe probability of 'malicious' (out-of-fold for benign/malicious)",
            "centroid_ratio": "d(x, mu_benign) / (d(x, mu_benign) + d(x, mu_malicious)) in the space standardised by benign+malicious; the boundary score",
            "knn_share": f"share of malicious among the {cfg.k} nearest benign+malicious prompts (standardised space)",
            "boundary_closeness": "1 - 2|probe_p - 0.5|",
            "auroc": "AUROC of each score at predicting refusal (refusal, partial refusal or gibberish, as over-refusal counts them) vs compliance on pseudo-malicious prompts; bootstrap 95% CI",
        },
        **info,
        "layers": layers,
        "plot_layers": plot_layers,
        "variants": [{"name": v.name, "model": v.model, "extraction": v.extraction, "layers": v.summaries} for v in variants],
    }
    run.write_json(METRICS, metrics)
    analysis_report.write_scores_csv(run.path / "boundary_scores.csv", variants, prompts)
    figures = analysis_report.write_figures(run.path, variants, prompts, layers, plot_layers, cfg)
    markdown = analysis_report.report_markdown(cfg, metrics, variants, figures)
    run.write_text("report.md", markdown)
    write_html_report(markdown, run.path / "report.html", title="mosr analyze report")
    hashes = {}
    for g in ("benign", "malicious", "pseudo"):
        hashes[g] = samples_hash([p.sample for p in prompts if p.group == g])
    run.write_metadata(command="analyze", config=asdict(cfg), seed=cfg.seed, data_hashes=hashes, model=variants[0].model,
                       extra={"variants": [v.model for v in variants], "processes": world,
                              "prompts_by_process": [sum(n) for n in zip(*(v.by_process for v in variants))]})
    return metrics


def _check_subset(chosen: Sequence[int], layers: list[int], loaded: Any) -> list[int]:
    norm = check_layers(loaded.model, list(chosen), "plot layer")
    missing = [x for x in norm if x not in layers]
    if missing:
        raise ConfigError(f"plot layers {missing} are not among the analysed layers; add them to --layers")
    return norm


def parse_layers(values: Sequence[str] | None) -> tuple[int, ...] | None:
    """``all``, integers (negative from the end), ``a-b`` ranges and comma lists."""
    if not values:
        return None
    out: list[int] = []
    for value in values:
        for part in str(value).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                return None
            m = re.fullmatch(r"(\d+)-(\d+)", part)
            try:
                out.extend(range(int(m.group(1)), int(m.group(2)) + 1) if m else [int(part)])
            except ValueError as exc:
                raise ConfigError(f"bad layer {part!r}: use integers, ranges like 4-12, or 'all'") from exc
    return tuple(dict.fromkeys(out))
