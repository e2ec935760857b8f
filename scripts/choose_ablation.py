"""Apply the selection rule of docs/TRAINING.md to the rows of the :val ablation experiment.

Each row is one point (step 60) of a MOSR configuration: the paper setting and each option. The
OALW controls (shuffled weights, reversed sign) are controls, not candidates. Clause 1: the lowest
over-refusal among rows with safety >= 90% and capability >= 0.9 x the undefended model's (C0, the
frontier's, results/frontier-2026-12-05/selection.json); ties to the higher safety. Clause 2: the
highest safety among rows keeping the capability floor. Prints the chosen row as JSON with the
`--set` overrides that train it from configs/train-mosr.yaml.

    python scripts/choose_ablation.py results/ablations-val/summary.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from mosr.methods import VARIANTS

CONTROLS = {"mosr-oalw-shuffled", "mosr-oalw-more"}
C0 = json.loads((Path(__file__).resolve().parent.parent / "results/frontier-2026-12-05/selection.json").read_text())["C0"]


def choose(rows: list[dict]) -> dict:
    cands = [r for r in rows if r["method"] not in CONTROLS]
    floor = [r for r in cands if r["capability"]["rate"] >= 0.9 * C0]
    clause1 = [r for r in floor if r["safety"]["rate"] >= 0.9]
    if clause1:
        best = min(clause1, key=lambda r: (r["over_refusal"]["rate"], -r["safety"]["rate"]))
        why = "clause 1: lowest over-refusal with safety >= 90% and capability >= 0.9 C0"
    elif floor:
        best = max(floor, key=lambda r: (r["safety"]["rate"], -r["over_refusal"]["rate"]))
        why = "clause 2: highest safety with capability >= 0.9 C0"
    else:
        best = max(cands, key=lambda r: r["capability"]["rate"])
        why = "clause 2b: highest capability"
    overrides = dict(VARIANTS[best["method"]].overrides) if best["method"] in VARIANTS else {}
    sets = [f"{k}={'null' if v is None else str(v).lower() if isinstance(v, bool) else v}" for k, v in overrides.items()]
    return {"method": best["method"], "why": why, "C0": C0, "sets": sets,
            "point": {k: round(100 * best[k]["rate"], 1) for k in ("safety", "over_refusal", "capability")},
            "meets_clause_1": [r["method"] for r in clause1]}


if __name__ == "__main__":
    rows = json.loads(Path(sys.argv[1]).read_text())["rows"]
    print(json.dumps(choose(rows), indent=1))
