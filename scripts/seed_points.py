"""Safety against over-refusal, one marker per seed with its 95% Wilson intervals (scripts' figures).

Used by ``experiment_progress.py --plot`` and ``summarize_chosen.py --plot``. A rate is a dict with
``rate``, ``low`` and ``high`` (shares, as in metrics.json and chosen.json).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

Point = tuple[dict, dict, str]  # (over-refusal rate, safety rate, note printed beside the marker)


def plot_seed_points(groups: Sequence[tuple[str, str, Sequence[Point]]], out: Path, *, title: str, xlabel: str, ylabel: str,
                     target_over: float | None = None) -> None:
    """``groups``: (legend name, colour, points). ``target_over`` (in %) shades the region of safety
    >= 90% at over-refusal <= that value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def bars(r: dict) -> tuple[float, list[list[float]]]:
        return 100 * r["rate"], [[100 * (r["rate"] - r["low"])], [100 * (r["high"] - r["rate"])]]

    fig, ax = plt.subplots(figsize=(8, 6))
    for name, colour, points in groups:
        for j, (over, safety, note) in enumerate(points):
            (x, xerr), (y, yerr) = bars(over), bars(safety)
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=colour, capsize=2, label=name if j == 0 else None)
            ax.annotate(note, (x, y), textcoords="offset points", xytext=(4, -9), fontsize=7, color=colour)
    if target_over is not None:
        ax.fill_between([0, target_over], 90, 100, color="green", alpha=0.08, label="target: safety ≥ 90, over-refusal ≤ undefended + 15")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    print(f"figure: {out}")
