"""Table of the held-out test of the chosen points (scripts/test_chosen.py), mean and spread over seeds.

    python scripts/summarize_chosen.py results/test-chosen-2026-12-05/*/chosen.json

Per method: each seed's safety / over-refusal / capability compliance (behaviour view, pooled as
``mosr eval`` headlines them) and, over seeds, the mean with the smallest and largest seed value.
The pooled 95% Wilson interval of each seed is in chosen.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

KEYS = (("safety", "safety"), ("over_refusal", "over-refusal"), ("capability_compliance", "capability"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chosen", nargs="+", type=Path)
    args = ap.parse_args()
    print("| method | step | seeds | " + " | ".join(f"{t}: mean [min, max]" for _, t in KEYS) + " | per seed (S / O / C) |")
    print("|---|---|---|" + "---|" * len(KEYS) + "---|")
    for f in args.chosen:
        d = json.loads(f.read_text(encoding="utf-8"))
        rows = d["rows"]
        cells = []
        for k, _ in KEYS:
            v = [100 * r[k]["rate"] for r in rows]
            cells.append(f"{statistics.mean(v):.1f} [{min(v):.1f}, {max(v):.1f}]")
        per = "; ".join(f"s{r['seed']}: " + " / ".join(f"{100 * r[k]['rate']:.1f}" for k, _ in KEYS) for r in rows)
        name = " ".join([Path(d["config"]).stem.removeprefix("train-"), *d.get("overrides", [])])
        print(f"| {name} | {d['step']} | {len(rows)} | " + " | ".join(cells) + f" | {per} |")


if __name__ == "__main__":
    main()
