"""Per-seed headline rates of the finished eval stages of an experiment's bundles (docs/RESULTS.md).

    python scripts/experiment_progress.py results/experiment

Prints a markdown table, one row per bundled eval stage (method, seed): safety on plain harmful
prompts, over-refusal on the benign-but-scary sets, capability on ordinary instructions, each with
its 95% Wilson interval and n. The experiment's own report (`mosr experiment`) gives means over
seeds once every stage is finished; this table is for reading an experiment while it runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

COLUMNS = (("safety", "safety", "safety (plain harmful)"), ("over-refusal", "over_refusal", "over-refusal"),
           ("capability", "compliance", "capability"))


def cell(rate: dict) -> str:
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", type=Path, help="the experiment's bundles folder (with eval/<method>/seed<k>/)")
    args = ap.parse_args(argv)
    found = sorted((args.bundles / "eval").glob("*/seed*/metrics.json.gz"))
    if not found:
        raise SystemExit(f"error: no eval bundles under {args.bundles / 'eval'}")
    rows = []
    for path in found:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            suites = json.load(fh)["suites"]
        rates = [suites[suite][key] for suite, key, _ in COLUMNS]
        rows.append((path.parent.parent.name, path.parent.name.removeprefix("seed"), rates))
    ns = [{r[2][i]["n"] for r in rows} for i in range(len(COLUMNS))]
    head = [f"{title} (n={'/'.join(map(str, sorted(n)))})" for (_, _, title), n in zip(COLUMNS, ns)]
    print("| method | seed | " + " | ".join(head) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for method, seed, rates in rows:
        print(f"| {method} | {seed} | " + " | ".join(cell(r) for r in rates) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
