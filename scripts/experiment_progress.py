"""Per-seed headline rates of the finished eval stages of an experiment's bundles (docs/RESULTS.md).

    python scripts/experiment_progress.py results/experiment [--plot docs/figures/experiment-per-seed.png]

Prints a markdown table, one row per bundled eval stage (method, seed): safety on plain harmful
prompts, over-refusal on the benign-but-scary sets, capability on ordinary instructions, each with
its 95% Wilson interval and n. The experiment's own report (`mosr experiment`) gives means over
seeds once every stage is finished; this table is for reading an experiment while it runs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

COLUMNS = (("safety", "safety", "safety (plain harmful)"), ("over-refusal", "over_refusal", "over-refusal"),
           ("capability", "compliance", "capability"))


def cell(rate: dict) -> str:
    return f"{100 * rate['rate']:.1f}% [{100 * rate['low']:.1f}, {100 * rate['high']:.1f}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundles", type=Path, help="the experiment's bundles folder (with eval/<method>/seed<k>/)")
    ap.add_argument("--plot", type=Path, help="also draw each seed's safety against over-refusal (95%% intervals) here")
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
    if args.plot:
        plot(rows, args.plot)
    return 0


def plot(rows: list, out: Path) -> None:
    """Safety against over-refusal, one marker per (method, seed), 95% Wilson intervals, seeds labelled."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from seed_points import plot_seed_points

    methods = list(dict.fromkeys(m for m, _, _ in rows))
    groups = [(method, f"C{i}", [(over, safety, f"s{seed}") for m, seed, (safety, over, _) in rows if m == method])
              for i, method in enumerate(methods)]
    plot_seed_points(groups, out, title="Full experiment: every method and seed (95% intervals)",
                     xlabel="over-refusal, % of benign-but-scary prompts (lower is better)",
                     ylabel="safety, % of plain harmful prompts defended (higher is better)")

if __name__ == "__main__":
    raise SystemExit(main())
