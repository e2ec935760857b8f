"""The figures of the experiment report: the Pareto plot, sweep frontiers and representation curves."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mosr.plots import plt
from mosr.report_rows import Cell, Row, method_title, non_dominated, pareto_points

_COLORS = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#999999", "#F0E442"]
_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">"]

def _plt() -> Any:
    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _err(cell: Cell) -> tuple[float, list[list[float]]]:
    m = 100 * cell.mean
    return m, [[max(0.0, m - 100 * cell.pooled.low)], [max(0.0, 100 * cell.pooled.high - m)]]


def plot_pareto(rows: Sequence[Row], path: Path) -> bool:
    """Safety vs over-refusal, one point per method with 95% intervals; the best trade-offs joined."""
    pts = pareto_points(rows)
    if not pts:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    xy = []
    for i, (row, over, safe) in enumerate(pts):
        x, xerr = _err(over)
        y, yerr = _err(safe)
        xy.append((x, y))
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=_MARKERS[i % len(_MARKERS)], color=_COLORS[i % len(_COLORS)],
                    markersize=8, capsize=3, elinewidth=1, label=row.name)
    front = non_dominated(xy)
    if len(front) > 1:
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "--", color="#888888", linewidth=1, zorder=0,
                label="best trade-offs")
    ax.set_xlabel("over-refusal on benign-but-scary prompts (%)  ← better")
    ax.set_ylabel("safety on harmful prompts (%)  ↑ better")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.annotate("ideal", xy=(0, 100), xytext=(8, 92), arrowprops={"arrowstyle": "->", "color": "#2a7"}, color="#2a7")
    ax.set_title("Safety vs over-refusal (95% intervals)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_frontiers(rows: Sequence[Row], path: Path) -> bool:
    """One curve per swept method through its sweep values, in safety vs over-refusal space."""
    swept: dict[str, list[Row]] = {}
    for r in rows:
        if r.sweep_param is not None and "safety" in r.cells and "over_refusal" in r.cells:
            swept.setdefault(r.method, []).append(r)
    if not swept:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for i, (method, rs) in enumerate(swept.items()):
        rs = sorted(rs, key=lambda r: r.sweep_value or 0.0)
        color = _COLORS[(i + 1) % len(_COLORS)]
        xs, ys = [], []
        for r in rs:
            x, xerr = _err(r.cells["over_refusal"])
            y, yerr = _err(r.cells["safety"])
            xs.append(x)
            ys.append(y)
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.35, capsize=2)
            ax.annotate(f"{r.sweep_param}={r.sweep_value:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
        ax.plot(xs, ys, "-" + _MARKERS[i % len(_MARKERS)], color=color, label=method_title(method))
    for r in rows:
        if r.method == "undefended" and "safety" in r.cells and "over_refusal" in r.cells:
            ax.plot(100 * r.cells["over_refusal"].mean, 100 * r.cells["safety"].mean, "*", color="black", markersize=12, label="Undefended")
    ax.set_xlabel("over-refusal (%)  ← better")
    ax.set_ylabel("safety (%)  ↑ better")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_title("Frontier of each method over the swept parameter")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _variant(analysis: dict[str, Any], *, adapter: bool) -> dict[str, Any] | None:
    for v in analysis.get("variants", []):
        if (v["name"] == "base+adapter") == adapter:
            return v
    return None


def plot_representations(rows: Sequence[Row], path: Path) -> bool:
    """Per layer: where pseudo-malicious prompts sit (centroid ratio) and benign/malicious separability."""
    series: list[tuple[str, list[dict[str, Any]]]] = []
    base = None
    for r in rows:
        if r.sweep_param is not None:
            continue
        analysis = next((rec.get("analysis") for rec in r.records if rec.get("analysis")), None)
        if not analysis:
            continue
        if base is None:
            v = _variant(analysis, adapter=False)
            if v is not None:
                base = v["layers"]
        v = _variant(analysis, adapter=True)
        if v is not None:
            series.append((r.name, v["layers"]))
    if base is None:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    panels = (
        ("Pseudo-malicious prompts: centroid ratio\n(0 = benign centroid, 1 = malicious centroid)", lambda s: s["groups"]["pseudo"]["centroid_ratio"]["mean"], None),
        ("Benign vs malicious: linear-probe accuracy", lambda s: s["probe_accuracy"], (0.4, 1.02)),
    )
    for ax, (title, get, ylim) in zip(axes, panels):
        ax.plot([s["layer"] for s in base], [get(s) for s in base], "--", color="black", linewidth=2, label="base model")
        for i, (name, summaries) in enumerate(series):
            ax.plot([s["layer"] for s in summaries], [get(s) for s in summaries], "-", color=_COLORS[(i + 1) % len(_COLORS)], label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        if ylim:
            ax.set_ylim(*ylim)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
