#!/usr/bin/env python3
"""Would the selection rule choose the same points with today's judge? The :val frontiers re-judged.

Every validation evaluation of the step frontiers (``results/frontier-2026-12-05/*/val-step-*`` and
``results/frontier-2026-12-06/*/val-step-*``, result bundles) is unpacked into ``runs/val-rejudge/``
and judged again with the current default judge (``mosr judge``); nothing is generated and the
committed bundles are left as they are. The rule of docs/TRAINING.md (``scripts/select_point.py``) is
then applied to the old and the new numbers, with the undefended model's capability C0 of
``results/frontier-2026-12-05/selection.json``, and each point is printed old -> new.

    python scripts/rejudge_frontiers.py --json results/frontier-2026-12-06/selection-round10.json \
        > results/frontier-2026-12-06/rejudge-round10.txt

``--json`` writes the new choices in the format of ``scripts/select_point.py --json`` (keyed by the
same frontier paths), the record the quickstart's chosen points are tested against.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from frontier_steps import row  # noqa: E402
from select_point import choose  # noqa: E402

OUT = Path("runs/val-rejudge")
FRONTIERS = ("results/frontier-2026-12-05", "results/frontier-2026-12-06")


def rejudged(bundle: Path, dst: Path) -> dict:
    """The bundle's eval metrics judged again with the current default judge (kept in ``dst`` for reruns)."""
    if not (dst / "metrics.json").is_file():
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["mosr", "bundle", str(bundle), "--unpack", "--out", str(dst)], check=True, capture_output=True)
        subprocess.run(["mosr", "judge", str(dst)], check=True, capture_output=True)
    return json.loads((dst / "metrics.json").read_text(encoding="utf-8"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the re-judged choices here (select_point.py's format)")
    args = ap.parse_args()
    out = {}
    c0 = json.loads(Path(FRONTIERS[0], "selection.json").read_text(encoding="utf-8"))["C0"]
    print(f"C0 (the undefended model, as before) = {100 * c0:.1f}%")
    for f in sorted(p for root in FRONTIERS for p in Path(root).glob("*/frontier.json")):
        data = json.loads(f.read_text(encoding="utf-8"))
        old = data["rows"]
        new = [row(r["step"], rejudged(f.parent / f"val-step-{r['step']:03d}", OUT / f.parent.name / f"val-step-{r['step']:03d}"))
               for r in old]
        (new_best, why), (old_best, _) = choose(new, c0), choose(old, c0)
        out[str(f)] = {"config": data["config"], "overrides": data.get("overrides", []), "chosen_step": new_best["step"],
                       "why": why, "chosen": new_best["text"]}
        print(f"\n{f}: chosen step {old_best['step']} -> {new_best['step']} ({why[:7]})")
        for n, o in zip(new, old):
            t, u = n["text"], o["text"]
            print(f"  step {n['step']:>3}: S {u['safety'][:5]} -> {t['safety'][:5]}  O {u['over_refusal'][:5]} -> {t['over_refusal'][:5]}"
                  f"  C {u['capability_compliance'][:5]} -> {t['capability_compliance'][:5]}")
    if args.json:
        args.json.write_text(json.dumps({"C0": c0, "judge": "default (re-judged)", "frontiers": out}, indent=1) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
