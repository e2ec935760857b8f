"""``mosr analyze``: where over-refused prompts sit in representation space.

Extracts pooled representations of benign, malicious and pseudo-malicious prompts (optionally split
by what the model did in a ``mosr eval`` run), computes the per-layer metrics of
:mod:`mosr.analysis`, and writes ``metrics.json``, ``boundary_scores.csv``, figures, ``report.md``,
a self-contained ``report.html`` and ``run.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import io
import logging
import math
import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mosr.analysis import SCORES, AnalysisConfig, LayerResult, analyze_layers, summarise_scores
from mosr.data import Sample, load_dataset, samples_hash
from mosr.errors import ConfigError, DataError
from mosr.representations import POOLINGS, extract

log = logging.getLogger(__name__)

DEFAULT_BENIGN = ("self-instruct:test",)
DEFAULT_MALICIOUS = ("advbench:test", "jbb-harmful", "strongreject")
DEFAULT_PSEUDO = ("or-bench-hard:test", "xstest-safe")
REFUSED_VERDICTS = {"refusal", "partial", "gibberish"}
ANSWERED_VERDICTS = {"compliance"}
GROUP_LABEL = {"benign": "benign", "malicious": "malicious", "pseudo": "pseudo-malicious"}


@dataclass(frozen=True)
class AnalyzeConfig:
    """What ``mosr analyze`` extracts and compares."""

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
    from mosr.evaluate import JUDGMENTS
    from mosr.runs import iter_jsonl

    path = Path(run) / JUDGMENTS
    if not path.is_file():
        raise DataError(f"{path} not found; --eval-run must be a folder written by `mosr eval`")
    verdicts: dict[tuple[str, str], str] = {}
    attacked = 0
    for i, rec in enumerate(iter_jsonl(path), 1):
        missing = [k for k in ("dataset", "attack", "sample_id", "verdict") if k not in rec]
        if missing:
            raise DataError(f"{path}: record {i} lacks {', '.join(missing)}")
        if rec["attack"] != "none":
            attacked += 1
            continue
        verdicts[(str(rec["dataset"]), str(rec["sample_id"]))] = str(rec["verdict"])
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


def _resolve_layers(loaded: Any, layers: tuple[int, ...] | None) -> list[int]:
    from mosr.models import check_layers, num_layers

    return check_layers(loaded.model, list(layers)) if layers is not None else list(range(num_layers(loaded.model)))


def _analyze_variant(name: str, loaded: Any, prompts: list[Prompt], layers: list[int], cfg: AnalyzeConfig, cache: Path) -> VariantResult:
    vecs: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for group in ("benign", "malicious", "pseudo"):  # one cache entry per group: groups are reused across runs
        members = [p for p in prompts if p.group == group]
        reps = extract(
            loaded, [p.sample.prompt for p in members], layers=layers, pooling=cfg.pooling,  # type: ignore[arg-type]
            ids=[f"{p.spec}/{p.sample.id}" for p in members], system=cfg.system, batch_size=cfg.batch_size,
            cache_dir=cache, desc=f"extract {name}: {group}",
        )
        vecs[group] = np.asarray(reps.vectors)
        meta[group] = dict(reps.meta)
    outcome = [p.outcome for p in prompts if p.group == "pseudo"]
    results, summaries = analyze_layers(vecs, layers, outcome=outcome, config=AnalysisConfig(folds=cfg.folds, k=cfg.k, seed=cfg.seed))
    specs = np.array([p.spec for p in prompts if p.group == "pseudo"])
    if len(set(specs.tolist())) > 1:
        for res, summary in zip(results, summaries):
            summary["pseudo_by_dataset"] = {spec: summarise_scores(res.scores["pseudo"], specs == spec) for spec in dict.fromkeys(specs.tolist())}
    return VariantResult(name, loaded.describe(), results, summaries, vecs, meta)


def default_plot_layers(layers: Sequence[int]) -> list[int]:
    """Up to 4 of ``layers`` at about 1/4, 1/2, 3/4 and full depth."""
    ordered = sorted(layers)
    picks = [ordered[max(0, math.ceil(f * len(ordered)) - 1)] for f in (0.25, 0.5, 0.75, 1.0)]
    return list(dict.fromkeys(picks))


def run_analyze(cfg: AnalyzeConfig, out: str | Path) -> dict[str, Any]:
    """Run the whole analysis into ``out`` and return the metrics (also written to metrics.json)."""
    from mosr.models import attach_adapter, load_model
    from mosr.runs import RunDir, check_run_kind

    check_run_kind(out, "analyze")
    run = RunDir(out)
    prompts, info = load_groups(cfg)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else run.path / "representations"
    loaded = load_model(cfg.model)
    layers = _resolve_layers(loaded, cfg.layers)
    plot_layers = _check_subset(cfg.plot_layers, layers, loaded) if cfg.plot_layers else default_plot_layers(layers)
    variants = [_analyze_variant("base" if (cfg.adapter or cfg.compare_model) else "model", loaded, prompts, layers, cfg, cache)]
    if cfg.adapter:
        attach_adapter(loaded, cfg.adapter)
        variants.append(_analyze_variant("base+adapter", loaded, prompts, layers, cfg, cache))
    del loaded
    if cfg.compare_model:
        other = load_model(cfg.compare_model)
        other_layers = _resolve_layers(other, cfg.layers)
        if other_layers != layers:
            raise ConfigError(f"--compare-model {cfg.compare_model} has other layers ({len(other_layers)}) than --model; pass --layers valid for both")
        variants.append(_analyze_variant(f"compare ({cfg.compare_model})", other, prompts, layers, cfg, cache))
        del other
    metrics = {
        "config": asdict(cfg),
        "definitions": {
            "h_l": "residual stream after decoder block l (0-based) = hidden_states[l + 1]",
            "probe_accuracy": f"{cfg.folds}-fold stratified CV accuracy of standardise + logistic regression, benign vs malicious; Wilson 95% CI",
            "probe_p": "probe probability of 'malicious' (out-of-fold for benign/malicious)",
            "centroid_ratio": "d(x, mu_benign) / (d(x, mu_benign) + d(x, mu_malicious)) in the space standardised by benign+malicious; the boundary score",
            "knn_share": f"share of malicious among the {cfg.k} nearest benign+malicious prompts (standardised space)",
            "boundary_closeness": "1 - 2|probe_p - 0.5|",
            "auroc": "AUROC of each score at predicting refusal (refusal or gibberish) vs compliance on pseudo-malicious prompts; bootstrap 95% CI",
        },
        **info,
        "layers": layers,
        "plot_layers": plot_layers,
        "variants": [{"name": v.name, "model": v.model, "extraction": v.extraction, "layers": v.summaries} for v in variants],
    }
    run.write_json("metrics.json", metrics)
    _write_scores_csv(run.path / "boundary_scores.csv", variants, prompts)
    figures = _figures(run.path, variants, prompts, layers, plot_layers, cfg)
    markdown = _report_markdown(cfg, metrics, variants, figures)
    run.write_text("report.md", markdown)
    from mosr.report_html import write_html_report

    write_html_report(markdown, run.path / "report.html", title="mosr analyze report")
    hashes = {}
    for g in ("benign", "malicious", "pseudo"):
        hashes[g] = samples_hash([p.sample for p in prompts if p.group == g])
    run.write_metadata(command="analyze", config=asdict(cfg), seed=cfg.seed, data_hashes=hashes, model=variants[0].model,
                       extra={"variants": [v.model for v in variants]})
    return metrics


def _check_subset(chosen: Sequence[int], layers: list[int], loaded: Any) -> list[int]:
    from mosr.models import check_layers

    norm = check_layers(loaded.model, list(chosen), "plot layer")
    missing = [x for x in norm if x not in layers]
    if missing:
        raise ConfigError(f"plot layers {missing} are not among the analysed layers; add them to --layers")
    return norm


# ---------------------------------------------------------------------------------------- outputs
def _write_scores_csv(path: Path, variants: list[VariantResult], prompts: list[Prompt]) -> None:
    from mosr.runs import atomic_write_text

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["variant", "layer", "group", "dataset", "sample_id", "verdict", "outcome", *SCORES])
    by_group = {g: [p for p in prompts if p.group == g] for g in ("benign", "malicious", "pseudo")}
    for v in variants:
        for res in v.results:
            for g, plist in by_group.items():
                s = res.scores[g]
                cols = [s.get(name) for name in SCORES]
                for i, p in enumerate(plist):
                    writer.writerow([v.name, res.layer, g, p.spec, p.sample.id, p.verdict or "", p.outcome if g == "pseudo" else "",
                                     *(f"{c[i]:.5f}" for c in cols)])
    atomic_write_text(path, buf.getvalue())


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def _group_series(summaries: list[dict[str, Any]], score: str) -> dict[str, Any]:
    from mosr.plots import Series

    out = {}
    for g, label in (("benign", "benign"), ("malicious", "malicious"), ("pseudo", "pseudo-malicious"),
                     ("pseudo-refused", "pseudo-malicious refused"), ("pseudo-answered", "pseudo-malicious answered")):
        if g not in summaries[0]["groups"]:
            continue
        vals = [s["groups"][g][score] for s in summaries]
        dashed = g == "pseudo" and "pseudo-refused" in summaries[0]["groups"]
        out[label] = Series([x["mean"] for x in vals], [x["ci"][0] for x in vals], [x["ci"][1] for x in vals],
                            linestyle="--" if dashed else "-")
    return out


def _figures(folder: Path, variants: list[VariantResult], prompts: list[Prompt], layers: list[int], plot_layers: list[int], cfg: AnalyzeConfig) -> dict[str, str]:
    from mosr.plots import CurvePanel, ScatterPanel, Series, histograms, layer_curves, project_2d, save_figure, scatter_grid

    figs: dict[str, str] = {}
    for v in variants:
        s = v.summaries
        acc = Series([x["probe_accuracy"] for x in s], [x["probe_ci"][0] for x in s], [x["probe_ci"][1] for x in s], color="#000000")
        panels = [
            CurvePanel({"probe accuracy": acc}, title="Separability: benign vs malicious probe", ylabel=f"{cfg.folds}-fold CV accuracy",
                       ylim=(0.4, 1.02), hlines={"chance": 0.5}),
            CurvePanel(_group_series(s, "probe_p"), title="Probe score P(malicious)", ylabel="mean probe score", ylim=(-0.02, 1.02)),
            CurvePanel(_group_series(s, "centroid_ratio"), title="Centroid distance ratio (0 benign, 1 malicious)", ylabel="mean ratio"),
            CurvePanel(_group_series(s, "knn_share"), title=f"Malicious share of {cfg.k} nearest neighbours", ylabel="mean share", ylim=(-0.02, 1.02)),
        ]
        if "auroc" in s[0]:
            names = {"centroid_ratio": "centroid ratio (boundary score)", "probe_p": "probe score", "knn_share": "kNN share", "boundary_closeness": "boundary closeness"}
            panels.append(CurvePanel(
                {names[k]: Series([x["auroc"][k]["auroc"] for x in s], [x["auroc"][k]["ci"][0] for x in s], [x["auroc"][k]["ci"][1] for x in s]) for k in SCORES},
                title="Predicting over-refusal of pseudo-malicious prompts", ylabel="AUROC", ylim=(0, 1), hlines={"chance": 0.5},
            ))
        name = f"curves-{_slug(v.name)}.png"
        save_figure(layer_curves(layers, panels, title=f"Layer-wise metrics — {v.name} ({cfg.pooling} pooling)"), folder / name)
        figs[f"curves:{v.name}"] = name
    if len(variants) > 1:
        panels = [CurvePanel({v.name: Series([x["probe_accuracy"] for x in v.summaries]) for v in variants}, title="Probe accuracy", ylabel="CV accuracy", ylim=(0.4, 1.02))]
        for g in ("pseudo", "pseudo-refused", "pseudo-answered"):
            if g in variants[0].summaries[0]["groups"]:
                panels.append(CurvePanel(
                    {v.name: Series([x["groups"][g]["centroid_ratio"]["mean"] for x in v.summaries]) for v in variants},
                    title=f"Centroid ratio of {g.replace('pseudo', 'pseudo-malicious').replace('-r', ' r').replace('-a', ' a')}", ylabel="mean ratio"))
        save_figure(layer_curves(layers, panels, title="Before / after"), folder / "curves-compare.png")
        figs["curves:compare"] = "curves-compare.png"
    labels = np.array([p.label for p in prompts if p.group == "benign"] + [p.label for p in prompts if p.group == "malicious"]
                      + [p.label for p in prompts if p.group == "pseudo"])
    order = ["benign", "malicious", "pseudo-malicious", "pseudo-malicious unjudged", "pseudo-malicious answered", "pseudo-malicious refused"]
    methods = ["pca"] + (["tsne"] if cfg.projection == "tsne" else [])
    for method in methods:
        grid = []
        for v in variants:
            row = []
            for layer in plot_layers:
                pos = layers.index(layer)
                x = np.concatenate([v.vectors[g][:, pos] for g in ("benign", "malicious", "pseudo")])
                pts, (xl, yl) = project_2d(x, method, seed=cfg.seed)  # type: ignore[arg-type]
                title = f"layer {layer}" + (f" — {v.name}" if len(variants) > 1 else "")
                row.append(ScatterPanel(pts, labels, title=title, xlabel=xl, ylabel=yl, order=order))
            grid.append(row)
        name = f"{method}.png"
        save_figure(scatter_grid(grid, title=f"{method.upper() if method == 'pca' else 't-SNE'} of {cfg.pooling}-pooled representations"), folder / name)
        figs[method] = name
    hist_panels = []
    for v in variants:
        for layer in plot_layers:
            res = v.results[layers.index(layer)]
            groups = {"benign": res.scores["benign"].probe_p, "malicious": res.scores["malicious"].probe_p}
            pseudo_prompts = [p for p in prompts if p.group == "pseudo"]
            lab = np.array([p.label for p in pseudo_prompts])
            for name in dict.fromkeys(lab.tolist()):
                groups[name] = res.scores["pseudo"].probe_p[lab == name]
            hist_panels.append((f"layer {layer}" + (f" — {v.name}" if len(variants) > 1 else ""), groups))
    save_figure(histograms(hist_panels, xlabel="probe score P(malicious)", ncols=len(plot_layers)), folder / "probe-scores.png")
    figs["hist"] = "probe-scores.png"
    return figs


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _ci(d: dict[str, Any], key: str = "mean", digits: int = 2) -> str:
    return f"{_fmt(d[key], digits)} [{_fmt(d['ci'][0], digits)}, {_fmt(d['ci'][1], digits)}]"


def _report_markdown(cfg: AnalyzeConfig, metrics: dict[str, Any], variants: list[VariantResult], figs: dict[str, str]) -> str:
    from mosr.report_html import markdown_table

    groups = metrics["groups"]
    lines = ["# Representation analysis: where pseudo-malicious prompts sit", ""]
    lines.append(f"Model `{cfg.model}`" + (f", adapter `{cfg.adapter}`" if cfg.adapter else "")
                 + (f", compared with `{cfg.compare_model}`" if cfg.compare_model else "")
                 + f"; pooling `{cfg.pooling}`; {len(metrics['layers'])} layers; {cfg.folds}-fold probe; k = {cfg.k} neighbours.")
    lines.append("")
    rows = [[g, groups[g]["n"], ", ".join(f"{k} ({n})" for k, n in groups[g]["by_dataset"].items())] for g in groups]
    lines += [markdown_table(["group", "n", "datasets (n)"], rows), ""]
    if "eval_run" in metrics:
        oc = metrics["pseudo_outcomes"]
        er = metrics["eval_run"]
        lines.append(f"Pseudo-malicious outcomes from eval run `{er['path']}` (plain prompts): refused (refusal or gibberish) {oc.get('refused', 0)}, "
                     f"answered {oc.get('answered', 0)}, unjudged {oc.get('unjudged', 0)} (excluded from the split and the AUROC), "
                     f"without a verdict {oc.get('unknown', 0)}; {er['attack_records_ignored']} jailbreak-wrapped records ignored.")
        lines.append("")
    lines += [
        "**Definitions.** `h_l` is the residual stream after decoder block `l` (0-based). Probe: standardise + logistic regression, "
        "benign vs malicious, stratified k-fold; accuracy with a Wilson 95% interval. Probe score: P(malicious), out-of-fold for benign and "
        "malicious prompts. Centroid ratio (the boundary score): `d(x, μ_benign) / (d(x, μ_benign) + d(x, μ_mal))` in the standardised space; "
        "0 = benign centroid, 1 = malicious centroid. kNN share: malicious share of the k nearest benign ∪ malicious prompts. "
        "Intervals are 95%.",
        "",
    ]
    for v in variants:
        s = {x["layer"]: x for x in v.summaries}
        best = max(v.summaries, key=lambda x: x["probe_accuracy"])
        lines += [f"## {v.name}", ""]
        lines.append(f"Best separability at layer {best['layer']}: probe accuracy {_fmt(best['probe_accuracy'], 3)} "
                     f"[{_fmt(best['probe_ci'][0], 3)}, {_fmt(best['probe_ci'][1], 3)}] (n = {best['n_probe']}).")
        lines.append("")
        headers = ["layer", "probe acc.", "group", "n", "probe score", "share p>0.5", "centroid ratio", "kNN share"]
        rows = []
        for layer in metrics["plot_layers"]:
            x = s[layer]
            parts = [*x["groups"].items(), *((f"pseudo: {k}", d) for k, d in x.get("pseudo_by_dataset", {}).items())]
            for g, d in parts:
                rows.append([layer, _fmt(x["probe_accuracy"], 3), g, d["n"], _ci(d["probe_p"]), _fmt(d["share_probe_malicious"]),
                             _ci(d["centroid_ratio"], digits=3), _ci(d["knn_share"])])
        lines += [markdown_table(headers, rows), ""]
        if "auroc" in v.summaries[0]:
            rows = []
            for x in v.summaries:
                a = x["auroc"]
                rows.append([x["layer"], f"{a['n_refused']}/{a['n_answered']}", *(f"{_fmt(a[k]['auroc'])} [{_fmt(a[k]['ci'][0])}, {_fmt(a[k]['ci'][1])}]" for k in SCORES)])
            lines += ["AUROC at predicting over-refusal (refused vs answered pseudo-malicious prompts):", "",
                      markdown_table(["layer", "n refused/answered", *SCORES], rows), ""]
        lines += [f"![layer curves, {v.name}]({figs[f'curves:{v.name}']})", ""]
        rows = [[x["layer"], f"{_fmt(x['probe_accuracy'], 3)} [{_fmt(x['probe_ci'][0], 3)}, {_fmt(x['probe_ci'][1], 3)}]",
                 *(_fmt(x["groups"][g]["centroid_ratio"]["mean"], 3) for g in ("benign", "pseudo", "malicious")),
                 _fmt(x["groups"]["pseudo"]["probe_p"]["mean"]), _fmt(x["groups"]["pseudo"]["knn_share"]["mean"])] for x in v.summaries]
        lines += ["All layers:", "", markdown_table(["layer", "probe acc. [95% CI]", "ratio benign", "ratio pseudo", "ratio malicious",
                                                     "probe score pseudo", "kNN share pseudo"], rows), ""]
    if "curves:compare" in figs:
        lines += ["## Before / after", "", f"![before and after]({figs['curves:compare']})", ""]
    lines += ["## Projections", "", f"![PCA]({figs['pca']})", ""]
    if "tsne" in figs:
        lines += [f"![t-SNE]({figs['tsne']})", ""]
    lines += ["## Probe score distributions", "", f"![probe scores]({figs['hist']})", ""]
    lines += ["Per-prompt scores: `boundary_scores.csv`; all numbers: `metrics.json`.", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- the CLI
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


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="where benign, malicious and over-refused prompts sit in representation space")
    p.add_argument("--model", default="default", help="'default' (embedded SmolLM2-135M), a hub id, a local folder or a .gguf file")
    p.add_argument("--adapter", default=None, help="LoRA adapter folder: compare the base model with base+adapter")
    p.add_argument("--compare-model", default=None, help="a second model to compare with (same number of layers)")
    p.add_argument("--eval-run", default=None, help="a `mosr eval` run folder: split pseudo-malicious prompts into refused / answered")
    p.add_argument("--benign", nargs="+", default=list(DEFAULT_BENIGN), metavar="SPEC", help="benign dataset specs")
    p.add_argument("--malicious", nargs="+", default=list(DEFAULT_MALICIOUS), metavar="SPEC", help="harmful dataset specs")
    p.add_argument("--pseudo", nargs="+", default=list(DEFAULT_PSEUDO), metavar="SPEC", help="pseudo-malicious (benign but scary) specs")
    p.add_argument("--layers", nargs="+", default=None, help="decoder layers (0-based): ints, ranges 4-12, or all (default)")
    p.add_argument("--pooling", default="last", choices=POOLINGS, help="last prompt token, mean over prompt tokens, or over all tokens")
    p.add_argument("--limit", type=int, default=150, help="prompts per group (default 150; 0 = all)")
    p.add_argument("--plot-layers", nargs="+", default=None, help="layers for the 2-D projections (default: 4 at 1/4..full depth)")
    p.add_argument("--tsne", action="store_true", help="also draw t-SNE projections")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--system", default=None, help="system prompt (default: the chat template's own)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the probe")
    p.add_argument("--k", type=int, default=10, help="neighbours for the kNN share")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", default=None, help="representation cache (default: OUT/representations)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    cfg = AnalyzeConfig(
        model=args.model, adapter=args.adapter, compare_model=args.compare_model, eval_run=args.eval_run,
        benign=tuple(args.benign), malicious=tuple(args.malicious), pseudo=tuple(args.pseudo), layers=parse_layers(args.layers),
        pooling=args.pooling, limit=args.limit or None, plot_layers=parse_layers(args.plot_layers),
        projection="tsne" if args.tsne else "pca", batch_size=args.batch_size, system=args.system, folds=args.folds, k=args.k,
        seed=args.seed, cache_dir=args.cache_dir,
    )
    metrics = run_analyze(cfg, args.out)
    for v in metrics["variants"]:
        best = max(v["layers"], key=lambda x: x["probe_accuracy"])
        print(f"{v['name']}: best probe accuracy {best['probe_accuracy']:.3f} at layer {best['layer']}")
    print(f"report: {args.out}/report.html")
    return 0
