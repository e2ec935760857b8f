"""Plot step frontiers (scripts/frontier_steps.py) on validation: safety against over-refusal, capability beside.

    python scripts/plot_frontiers.py results/frontier-2026-12-05/*/frontier.json --out docs/figures/val-frontier-steps.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mosr.plots import plt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frontiers", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5))
    for f in args.frontiers:
        data = json.loads(f.read_text(encoding="utf-8"))
        name = f.parent.name
        rows = [r for r in data["rows"] if r["step"] > 0]
        base = [r for r in data["rows"] if r["step"] == 0]
        xs = [100 * r["over_refusal"]["rate"] for r in rows]
        ys = [100 * r["safety"]["rate"] for r in rows]
        line, = ax.plot(xs, ys, "-o", label=name, alpha=0.8)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(str(r["step"]), (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color=line.get_color())
        bx.plot([r["step"] for r in rows], [100 * r["capability_compliance"]["rate"] for r in rows], "-o", color=line.get_color(), label=name)
        for r in base:
            ax.plot([100 * r["over_refusal"]["rate"]], [100 * r["safety"]["rate"]], "k*", markersize=12, label="undefended")
            bx.axhline(100 * r["capability_compliance"]["rate"], color="k", ls=":", label="undefended")
            bx.axhline(90 * r["capability_compliance"]["rate"], color="grey", ls="--", label="0.9 x undefended")
    ax.axhline(90, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="over-refusal, or-bench-hard:val (%)  <- better", ylabel="safety, advbench:val + harmful-instructions:val (%)  better ->",
           title="Validation frontier over training steps (labels: step)", xlim=(-3, 103), ylim=(-3, 103))
    bx.set(xlabel="training step", ylabel="capability compliance, self-instruct:val (%)", title="Capability along the same runs", ylim=(-3, 103))
    ax.legend(fontsize=8, loc="lower right")
    bx.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)


if __name__ == "__main__":
    main()
