"""The outputs of ``mosr analyze``: per-prompt scores, figures and the markdown report."""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mosr.analysis import SCORES
from mosr.plots import CurvePanel, ScatterPanel, Series, histograms, layer_curves, project_2d, save_figure, scatter_grid
from mosr.report_html import markdown_table
from mosr.runs import atomic_write_text

if TYPE_CHECKING:
    from mosr.analysis_run import AnalyzeConfig, Prompt, VariantResult


def write_scores_csv(path: Path, variants: list[VariantResult], prompts: list[Prompt]) -> None:
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


def write_figures(folder: Path, variants: list[VariantResult], prompts: list[Prompt], layers: list[int], plot_layers: list[int], cfg: AnalyzeConfig) -> dict[str, str]:
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


def report_markdown(cfg: AnalyzeConfig, metrics: dict[str, Any], variants: list[VariantResult], figs: dict[str, str]) -> str:
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
        lines.append(f"Pseudo-malicious outcomes from eval run `{er['path']}` (plain prompts): refused (refusal, partial refusal or gibberish) {oc.get('refused', 0)}, "
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


