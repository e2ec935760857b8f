"""The numbers of the experiment report: methods' row names, rates pooled over seeds, the Pareto front.

Rates over several seeds: the interval and n are those of the pooled counts (all seeds' completions
together, 95% Wilson interval); ``±`` is the standard deviation of the per-seed rates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mosr.methods import all_by_name
from mosr.metrics import Rate
from mosr.records import eval_rates, reference_perplexity
from mosr.steering.names import DESCRIPTIONS as STEERING


def method_title(name: str) -> str:
    """The row name of a registered method (:mod:`mosr.methods`) or steering method, or ``name`` itself."""
    method = all_by_name().get(name)
    return method.title if method else STEERING.get(name, (name, ""))[0]


def method_summary(name: str, missing: str = "") -> str:
    method = all_by_name().get(name)
    return method.summary if method else STEERING.get(name, ("", missing))[1]


@dataclass
class Cell:
    """One rate of one method, over one or more seeds."""

    pooled: Rate
    per_seed: list[float] = field(default_factory=list)

    @property
    def sd(self) -> float | None:
        vals = [v for v in self.per_seed if not math.isnan(v)]
        return statistics.stdev(vals) if len(vals) > 1 else None

    @property
    def mean(self) -> float:
        vals = [v for v in self.per_seed if not math.isnan(v)]
        return statistics.fmean(vals) if vals else math.nan

    def fmt(self) -> str:
        if self.pooled.n == 0:
            return "n/a"
        spread = f" ±{100 * self.sd:.1f}" if self.sd is not None else ""
        return f"{100 * self.mean:.1f}{spread} [{100 * self.pooled.low:.1f}–{100 * self.pooled.high:.1f}] n={self.pooled.n}"

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "per_seed": self.per_seed, "pooled": self.pooled.to_dict()}


def combine(rates: Sequence[dict[str, Any] | None]) -> Cell | None:
    """Pool per-seed rate dicts (``k``, ``n``) into one :class:`Cell`; None when no seed has the rate."""
    present = [r for r in rates if r]
    if not present:
        return None
    k, n = sum(int(r["k"]) for r in present), sum(int(r["n"]) for r in present)
    return Cell(Rate.of(k, n), [r["k"] / r["n"] if r["n"] else math.nan for r in present])


@dataclass
class Row:
    """One method variant, aggregated over its seeds."""

    label: str
    method: str
    sweep_param: str | None
    sweep_value: float | None
    seeds: list[int]
    cells: dict[str, Cell]
    perplexity: float | None
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)

    @property
    def name(self) -> str:
        base = method_title(self.method)
        return base if self.sweep_param is None else f"{base} ({self.sweep_param} = {self.sweep_value:g})"

    def get(self, key: str) -> Cell | None:
        return self.cells.get(key)


def aggregate(records: Sequence[dict[str, Any]]) -> list[Row]:
    """Group records by variant label (first-seen order) and pool their rates over seeds."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(rec["label"], []).append(rec)
    rows = []
    for label, recs in groups.items():
        per = [eval_rates(r["eval_metrics"]) for r in recs]
        keys = list(dict.fromkeys(k for p in per for k in p))
        cells = {k: c for k in keys if (c := combine([p.get(k) for p in per])) is not None}
        ppl = [p for r in recs if (p := reference_perplexity(r["eval_metrics"])) is not None]
        first = recs[0]
        rows.append(Row(label, first["method"], first.get("sweep_param"), first.get("sweep_value"), [r["seed"] for r in recs],
                        cells, statistics.fmean(ppl) if ppl else None, list(recs)))
    return rows


def pareto_points(rows: Sequence[Row]) -> list[tuple[Row, Cell, Cell]]:
    return [(r, r.cells["over_refusal"], r.cells["safety"]) for r in rows if "over_refusal" in r.cells and "safety" in r.cells]


def non_dominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (lower x = less over-refusal, higher y = safer)."""
    keep = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])
