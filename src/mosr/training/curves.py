"""The loss curves of a training run: ``losses.csv`` cells and ``losses.png``."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mosr.plots import plt


def fmt_cell(value: Any) -> str:
    """One losses.csv cell: empty for None and NaN."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def plot_losses(path: Path, history: list[dict[str, float]], method: str, terms: tuple[str, ...]) -> None:
    """losses.png: each loss term and the total, over the steps."""
    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for key in terms:
        ys = [h.get(key, math.nan) for h in history]
        if any(not math.isnan(y) for y in ys):
            axes[0].plot(steps, ys, label=key)
    axes[0].set_title(f"{method}: loss terms")
    axes[0].set_xlabel("step")
    axes[0].legend()
    axes[1].plot(steps, [h["loss"] for h in history], color="black")
    axes[1].set_title("total loss (with schedule)")
    axes[1].set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
