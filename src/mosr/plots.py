"""Generic figure helpers (matplotlib, Agg backend): 2-D projections, layer curves, bar charts.

The one module that sets the Matplotlib backend; every other module takes ``plt`` from here.

Every function returns a ``Figure``; :func:`save_figure` writes it and frees it. Nothing here knows
about mosr's data structures: callers pass arrays, labels and titles.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from mosr.errors import ConfigError  # noqa: E402

Projection = Literal["pca", "tsne"]

# Colour-blind-safe (Okabe-Ito) colours for the usual groups; other labels cycle through _CYCLE.
GROUP_COLORS: dict[str, str] = {
    "benign": "#0072B2",
    "malicious": "#D55E00",
    "pseudo-malicious": "#6E6E6E",
    "pseudo-malicious refused": "#CC79A7",
    "pseudo-malicious answered": "#009E73",
    "pseudo-malicious unjudged": "#999999",
}
_CYCLE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000"]
_MARKERS = {"benign": "o", "malicious": "s", "pseudo-malicious refused": "^", "pseudo-malicious answered": "v"}


def color_for(label: str, index: int = 0) -> str:
    return GROUP_COLORS.get(label, _CYCLE[index % len(_CYCLE)])


def _style() -> None:
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9, "axes.grid": True, "grid.alpha": 0.3})


def project_2d(x: np.ndarray, method: Projection = "pca", *, seed: int = 0, fit_on: np.ndarray | None = None) -> tuple[np.ndarray, tuple[str, str]]:
    """Project rows of ``x`` to 2-D; returns the points and axis labels.

    PCA is fitted on the standardised rows selected by ``fit_on`` (a boolean mask; default all) and
    reports explained variance in the labels. t-SNE (perplexity ≤ 30) embeds all rows.
    """
    from sklearn.preprocessing import StandardScaler

    x = np.asarray(x, np.float64)
    if len(x) < 3:
        raise ConfigError(f"need at least 3 points for a 2-D projection, got {len(x)}")
    mask = np.ones(len(x), bool) if fit_on is None else np.asarray(fit_on, bool)
    scaler = StandardScaler().fit(x[mask])
    z = scaler.transform(x)
    if method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=seed).fit(z[mask])
        ev = pca.explained_variance_ratio_ * 100
        return pca.transform(z), (f"PC1 ({ev[0]:.1f}% var.)", f"PC2 ({ev[1]:.1f}% var.)")
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30, max(2, (len(x) - 1) // 3)))
        y = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(z)
        return y, ("t-SNE 1", "t-SNE 2")
    raise ConfigError(f"unknown projection {method!r}; choose pca or tsne")


@dataclass
class ScatterPanel:
    """One scatter panel: 2-D points, a label per point, title and axis labels."""

    points: np.ndarray
    labels: Sequence[str]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    order: Sequence[str] | None = None  # drawing order of the labels (later ones on top)


def scatter_grid(
    panels: Sequence[Sequence[ScatterPanel | None]], *, title: str = "", panel_size: float = 3.6, point_size: float = 14
) -> Figure:
    """A grid of scatter panels (rows × columns) with one shared legend under the grid."""
    _style()
    rows = len(panels)
    cols = max(len(r) for r in panels) if rows else 0
    if rows == 0 or cols == 0:
        raise ConfigError("scatter_grid needs at least one panel")
    fig, axes = plt.subplots(rows, cols, figsize=(panel_size * cols + 0.4, panel_size * rows + 1.0), squeeze=False)
    seen: dict[str, object] = {}
    for r, row in enumerate(panels):
        for c in range(cols):
            ax = axes[r][c]
            panel = row[c] if c < len(row) else None
            if panel is None:
                ax.axis("off")
                continue
            labels = np.asarray(panel.labels)
            names = list(panel.order) if panel.order else list(dict.fromkeys(labels.tolist()))
            for i, name in enumerate(names):
                sel = labels == name
                if not sel.any():
                    continue
                handle = ax.scatter(
                    panel.points[sel, 0], panel.points[sel, 1], s=point_size, alpha=0.75, c=color_for(name, i),
                    marker=_MARKERS.get(name, "o"), edgecolors="white", linewidths=0.3, label=f"{name}",
                )
                seen.setdefault(name, handle)
            ax.set_title(panel.title)
            ax.set_xlabel(panel.xlabel)
            ax.set_ylabel(panel.ylabel)
            ax.tick_params(labelsize=8)
    bottom = 0.0
    if seen:
        ncol = min(2 * cols, 4, len(seen))
        fig.legend(list(seen.values()), list(seen.keys()), loc="lower center", ncol=ncol, frameon=False, markerscale=1.6)
        bottom = (0.28 * math.ceil(len(seen) / ncol) + 0.15) / fig.get_figheight()
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, bottom, 1, 1 - 0.45 / fig.get_figheight() if title else 1))
    return fig


@dataclass
class Series:
    """One curve: y values over x, an optional 95% band, a style."""

    y: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None
    color: str | None = None
    linestyle: str = "-"
    marker: str | None = None


@dataclass
class CurvePanel:
    """One panel of layer curves."""

    series: Mapping[str, Series]
    title: str = ""
    ylabel: str = ""
    ylim: tuple[float, float] | None = None
    hlines: Mapping[str, float] = field(default_factory=dict)  # label -> y of a dotted reference line


def _panel_grid(n: int, ncols: int, panel_size: tuple[float, float], extra_height: float) -> tuple[Figure, np.ndarray, int]:
    """A figure with ``n`` panels laid out ``ncols`` wide (fewer when there are fewer panels)."""
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows + extra_height), squeeze=False)
    return fig, axes, ncols


def layer_curves(x: Sequence[float], panels: Sequence[CurvePanel], *, xlabel: str = "layer", title: str = "", ncols: int = 2) -> Figure:
    """Panels of curves over a shared x (usually the layer index), with optional 95% bands."""
    _style()
    if not panels:
        raise ConfigError("layer_curves needs at least one panel")
    fig, axes, ncols = _panel_grid(len(panels), ncols, (5.6, 3.6), 0.4)
    xs = np.asarray(x, np.float64)
    for i, panel in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for j, (name, s) in enumerate(panel.series.items()):
            color = s.color or color_for(name, j)
            ax.plot(xs, np.asarray(s.y, np.float64), label=name, color=color, linestyle=s.linestyle, marker=s.marker, markersize=3, linewidth=1.6)
            if s.lo is not None and s.hi is not None:
                ax.fill_between(xs, np.asarray(s.lo, np.float64), np.asarray(s.hi, np.float64), color=color, alpha=0.15, linewidth=0)
        for name, yv in panel.hlines.items():
            ax.axhline(yv, color="black", linestyle=":", linewidth=1, label=name)
        ax.set_title(panel.title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        if panel.ylim:
            ax.set_ylim(*panel.ylim)
        if np.all(np.mod(xs, 1) == 0):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="best", frameon=True, framealpha=0.8, fontsize=8)
    for k in range(len(panels), axes.size):
        axes[k // ncols][k % ncols].axis("off")
    if title:
        fig.suptitle(title, fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 0.95 if title else 1))
    return fig


def bar_chart(
    categories: Sequence[str],
    values: Mapping[str, Sequence[float]],
    *,
    lo: Mapping[str, Sequence[float]] | None = None,
    hi: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """Grouped bars (one bar group per category, one bar per series) with optional 95% error bars."""
    _style()
    if not categories or not values:
        raise ConfigError("bar_chart needs categories and at least one series")
    n = len(values)
    width = 0.8 / n
    xs = np.arange(len(categories))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(categories) * max(1, n) * 0.6 + 2), 3.8))
    for j, (name, vals) in enumerate(values.items()):
        v = np.asarray(vals, np.float64)
        err = None
        if lo is not None and hi is not None and name in lo and name in hi:
            err = np.vstack([v - np.asarray(lo[name], np.float64), np.asarray(hi[name], np.float64) - v])
            err = np.where(np.isfinite(err), np.maximum(err, 0), 0)
        ax.bar(xs + (j - (n - 1) / 2) * width, v, width, yerr=err, capsize=3, label=name, color=color_for(name, j))
    ax.set_xticks(xs, list(categories), rotation=20 if max(len(c) for c in categories) > 10 else 0, ha="right" if max(len(c) for c in categories) > 10 else "center")
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if title:
        ax.set_title(title)
    if n > 1:
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig


def histograms(
    panels: Sequence[tuple[str, Mapping[str, np.ndarray]]], *, bins: int = 20, range_: tuple[float, float] = (0.0, 1.0), xlabel: str = "", ncols: int = 4
) -> Figure:
    """Overlaid density histograms per panel: ``[(title, {label: values})]``."""
    _style()
    if not panels:
        raise ConfigError("histograms needs at least one panel")
    fig, axes, ncols = _panel_grid(len(panels), ncols, (3.8, 3.0), 0.6)
    edges = np.linspace(range_[0], range_[1], bins + 1)
    handles: dict[str, object] = {}
    for i, (title, groups) in enumerate(panels):
        ax = axes[i // ncols][i % ncols]
        for j, (name, vals) in enumerate(groups.items()):
            v = np.asarray(vals, np.float64)
            if v.size == 0:
                continue
            weights = np.full(v.size, 1.0 / v.size)
            color = color_for(name, j)
            ax.hist(v, bins=edges, weights=weights, histtype="stepfilled", alpha=0.15, color=color, linewidth=0)
            _, _, patches = ax.hist(v, bins=edges, weights=weights, histtype="step", color=color, linewidth=1.8)
            handles.setdefault(name, patches[0])
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of prompts")
    for k in range(len(panels), axes.size):
        axes[k // ncols][k % ncols].axis("off")
    if handles:
        fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=min(5, len(handles)), frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def save_figure(fig: Figure, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Write a PNG and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path
