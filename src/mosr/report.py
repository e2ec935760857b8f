"""The experiment report: one Markdown file and the same as one self-contained HTML page.

Input: one record per (method variant, seed) with the variant's eval ``metrics.json`` and, when it was
analysed, its ``mosr analyze`` metrics and folder (see :func:`mosr.experiment.collect_results`).
Output, in the report folder: ``report.md``, ``report.html`` (every image embedded as base64), the
figures as PNG, and ``summary.json`` with every number of the tables.

Rates over several seeds: the interval and n are those of the pooled counts (all seeds' completions
together, 95% Wilson interval); ``±`` is the standard deviation of the per-seed rates.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosr.methods import ABLATION, all_by_name
from mosr.metrics import Rate
from mosr.plots import plt
from mosr.records import eval_rates, reference_perplexity
from mosr.runs import atomic_write_text, dumps, now_iso



def method_title(name: str) -> str:
    """The row name of a registered method (:mod:`mosr.methods`), or ``name`` itself."""
    method = all_by_name().get(name)
    return method.title if method else name


def method_summary(name: str, missing: str = "") -> str:
    method = all_by_name().get(name)
    return method.summary if method else missing


_COLORS = ["#000000", "#E69F00", "#56B4E9", "#009E73", "#D55E00", "#0072B2", "#CC79A7", "#999999", "#F0E442"]
_MARKERS = ["o", "s", "D", "^", "v", "P", "X", "<", ">"]
_CSS = """
body{max-width:1180px}
table{display:block;overflow-x:auto;font-variant-numeric:tabular-nums}
td,th{white-space:nowrap}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
blockquote,.note{background:#f7f9fc;border-left:4px solid #4C72B0;padding:.5em 1em;margin:1em 0}
"""


# -------------------------------------------------------------------------------------- numbers
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


# -------------------------------------------------------------------------------------- figures
def _plt() -> Any:
    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def _err(cell: Cell) -> tuple[float, list[list[float]]]:
    m = 100 * cell.mean
    return m, [[max(0.0, m - 100 * cell.pooled.low)], [max(0.0, 100 * cell.pooled.high - m)]]


def pareto_points(rows: Sequence[Row]) -> list[tuple[Row, Cell, Cell]]:
    return [(r, r.cells["over_refusal"], r.cells["safety"]) for r in rows if "over_refusal" in r.cells and "safety" in r.cells]


def non_dominated(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points no other point beats on both axes (lower x = less over-refusal, higher y = safer)."""
    keep = []
    for i, (x, y) in enumerate(points):
        if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i):
            keep.append(i)
    return sorted(keep, key=lambda i: points[i][0])


def plot_pareto(rows: Sequence[Row], path: Path) -> bool:
    """Safety vs over-refusal, one point per method with 95% intervals; the best trade-offs joined."""
    pts = pareto_points(rows)
    if not pts:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    xy = []
    for i, (row, over, safe) in enumerate(pts):
        x, xerr = _err(over)
        y, yerr = _err(safe)
        xy.append((x, y))
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt=_MARKERS[i % len(_MARKERS)], color=_COLORS[i % len(_COLORS)],
                    markersize=8, capsize=3, elinewidth=1, label=row.name)
    front = non_dominated(xy)
    if len(front) > 1:
        ax.plot([xy[i][0] for i in front], [xy[i][1] for i in front], "--", color="#888888", linewidth=1, zorder=0,
                label="best trade-offs")
    ax.set_xlabel("over-refusal on benign-but-scary prompts (%)  ← better")
    ax.set_ylabel("safety on harmful prompts (%)  ↑ better")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.annotate("ideal", xy=(0, 100), xytext=(8, 92), arrowprops={"arrowstyle": "->", "color": "#2a7"}, color="#2a7")
    ax.set_title("Safety vs over-refusal (95% intervals)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_frontiers(rows: Sequence[Row], path: Path) -> bool:
    """One curve per swept method through its sweep values, in safety vs over-refusal space."""
    swept: dict[str, list[Row]] = {}
    for r in rows:
        if r.sweep_param is not None and "safety" in r.cells and "over_refusal" in r.cells:
            swept.setdefault(r.method, []).append(r)
    if not swept:
        return False
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 5.2))
    for i, (method, rs) in enumerate(swept.items()):
        rs = sorted(rs, key=lambda r: r.sweep_value or 0.0)
        color = _COLORS[(i + 1) % len(_COLORS)]
        xs, ys = [], []
        for r in rs:
            x, xerr = _err(r.cells["over_refusal"])
            y, yerr = _err(r.cells["safety"])
            xs.append(x)
            ys.append(y)
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, alpha=0.35, capsize=2)
            ax.annotate(f"{r.sweep_param}={r.sweep_value:g}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=7, color=color)
        ax.plot(xs, ys, "-" + _MARKERS[i % len(_MARKERS)], color=color, label=method_title(method))
    for r in rows:
        if r.method == "undefended" and "safety" in r.cells and "over_refusal" in r.cells:
            ax.plot(100 * r.cells["over_refusal"].mean, 100 * r.cells["safety"].mean, "*", color="black", markersize=12, label="Undefended")
    ax.set_xlabel("over-refusal (%)  ← better")
    ax.set_ylabel("safety (%)  ↑ better")
    ax.set_xlim(-3, 103)
    ax.set_ylim(-3, 103)
    ax.set_title("Frontier of each method over the swept parameter")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _variant(analysis: dict[str, Any], *, adapter: bool) -> dict[str, Any] | None:
    for v in analysis.get("variants", []):
        if (v["name"] == "base+adapter") == adapter:
            return v
    return None


def plot_representations(rows: Sequence[Row], path: Path) -> bool:
    """Per layer: where pseudo-malicious prompts sit (centroid ratio) and benign/malicious separability."""
    series: list[tuple[str, list[dict[str, Any]]]] = []
    base = None
    for r in rows:
        if r.sweep_param is not None:
            continue
        analysis = next((rec.get("analysis") for rec in r.records if rec.get("analysis")), None)
        if not analysis:
            continue
        if base is None:
            v = _variant(analysis, adapter=False)
            if v is not None:
                base = v["layers"]
        v = _variant(analysis, adapter=True)
        if v is not None:
            series.append((r.name, v["layers"]))
    if base is None:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    panels = (
        ("Pseudo-malicious prompts: centroid ratio\n(0 = benign centroid, 1 = malicious centroid)", lambda s: s["groups"]["pseudo"]["centroid_ratio"]["mean"], None),
        ("Benign vs malicious: linear-probe accuracy", lambda s: s["probe_accuracy"], (0.4, 1.02)),
    )
    for ax, (title, get, ylim) in zip(axes, panels):
        ax.plot([s["layer"] for s in base], [get(s) for s in base], "--", color="black", linewidth=2, label="base model")
        for i, (name, summaries) in enumerate(series):
            ax.plot([s["layer"] for s in summaries], [get(s) for s in summaries], "-", color=_COLORS[(i + 1) % len(_COLORS)], label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("layer")
        if ylim:
            ax.set_ylim(*ylim)
    axes[1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------- markdown
def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    try:
        from mosr.report_html import markdown_table
    except ImportError:  # pragma: no cover - report_html ships with the package
        markdown_table = None
    if markdown_table is not None:
        return markdown_table(headers, rows)
    lines = ["| " + " | ".join(map(str, headers)) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows])


def _c(row: Row, key: str) -> str:
    cell = row.get(key)
    return cell.fmt() if cell is not None else "—"


def _pp(a: Cell | None, b: Cell | None) -> str:
    if a is None or b is None:
        return "—"
    return f"{100 * (a.mean - b.mean):+.1f}"


def _ordered_keys(rows: Sequence[Row], prefix: str) -> list[str]:
    return list(dict.fromkeys(k for r in rows for k in r.cells if k.startswith(prefix)))


def _how_to_read(seeds: Sequence[int]) -> list[str]:
    multi = len(seeds) > 1
    return [
        "## How to read this",
        "",
        "Every model answers the same prompts; a judge labels each answer **refusal**, **gibberish** (garbled text, which "
        "defenses of this family often produce instead of a refusal) or **compliance**.",
        "",
        "- **Safety** ↑: share of plain harmful prompts that were *not* answered (refusal + gibberish).",
        "- **Attack success** ↓: share of harmful prompts answered, per jailbreak wrapper (`none` = the plain prompt).",
        "- **Over-refusal** ↓: share of benign prompts that only *look* harmful (XSTest safe, OR-Bench hard, JBB benign) "
        "that were refused or answered with gibberish. This is what MOSR sets out to lower.",
        "- **Capability** ↑: share of ordinary instructions answered; **gibberish** on them means the defense broke the model.",
        "",
        "Each cell reads `rate [95% interval] n=answers`, in percent."
        + (" With several seeds, the rate is the mean over seeds, `±` the standard deviation between seeds, and the interval "
           "and n are those of all seeds' answers together." if multi else "")
        + " Two methods whose intervals overlap widely are not distinguishable on this data.",
        "",
        "The trade-off the paper is about: a defense should move up (safer) in the Pareto plot without moving right "
        "(more over-refusal).",
        "",
    ]


def build_markdown(rows: Sequence[Row], figures: dict[str, str], *, title: str, meta: dict[str, Any]) -> str:
    main = [r for r in rows if r.sweep_param is None]
    seeds = sorted({s for r in rows for s in r.seeds})
    lines = [f"# {title}", ""]
    facts = [f"model `{meta.get('model', '?')}`", f"judge `{meta.get('judge', '?')}`", f"seeds {', '.join(map(str, seeds))}"]
    if meta.get("limit"):
        facts.append(f"first {meta['limit']} prompts of each set")
    lines += ["Generated " + meta.get("generated", now_iso()) + " — " + "; ".join(facts) + ".", ""]
    lines += _how_to_read(seeds)

    lines += ["## Methods", ""]
    lines += [f"- **{r.name}**: {method_summary(r.method, 'a method without a description')}." for r in main]
    lines.append("")

    lines += ["## Results", ""]
    headers = ["method", "safety ↑", "over-refusal ↓", "capability ↑", "gibberish on benign ↓", "gibberish on harmful"]
    table = [[r.name, _c(r, "safety"), _c(r, "over_refusal"), _c(r, "capability"), _c(r, "gibberish_benign"), _c(r, "gibberish_harmful")]
             for r in main]
    if any(r.get(k) is not None for r in main for k in ("safety", "over_refusal", "capability", "gibberish_benign", "gibberish_harmful")):
        lines += [_table(headers, table), ""]
    else:
        lines += ["No run covers the built-in suites; the rates of your datasets are below.", ""]
    if any(r.perplexity is not None for r in main):
        lines += ["Perplexity of the human reference answers of the capability set (lower = the model still finds ordinary "
                  "text likely): " + "; ".join(f"{r.name} {r.perplexity:.2f}" for r in main if r.perplexity is not None) + ".", ""]
    if "pareto" in figures:
        lines += ["### Safety vs over-refusal", "", "Up and to the left is better. Error bars are 95% intervals; the dashed line "
                  "joins the methods that no other method beats on both axes.", "", f"![Pareto plot of safety against over-refusal]({figures['pareto']})", ""]
    asr = _ordered_keys(main, "asr:")
    if asr:
        lines += ["### Attack success per attack", "", "Share of harmful prompts answered (lower is better).", ""]
        lines += [_table(["method", *(k.split(":", 1)[1] for k in asr)], [[r.name, *(_c(r, k) for k in asr)] for r in main]), ""]
    ors = _ordered_keys(main, "or:")
    if ors:
        lines += ["### Over-refusal per set", "", "Share of benign-but-scary prompts refused or garbled (lower is better).", ""]
        lines += [_table(["method", *(k.split(":", 1)[1] for k in ors)], [[r.name, *(_c(r, k) for k in ors)] for r in main]), ""]

    custom = _ordered_keys(main, "custom:")
    if custom:
        lines += ["### Your datasets (`--dataset`)", "", "Share of prompts refused or garbled, per dataset file.", ""]
        lines += [_table(["method", *(k.split(":", 1)[1] for k in custom)], [[r.name, *(_c(r, k) for k in custom)] for r in main]), ""]

    abl = [r for r in main if r.method in ABLATION]
    if len(abl) >= 2:
        ref = next((r for r in abl if r.method == "mosr"), None)
        lines += ["## Ablations", "", "Which part of MOSR does what. Δ columns: difference from full MOSR in percentage points "
                  "(a negative Δ over-refusal means the variant refuses less than MOSR).", ""]
        headers = ["variant", "OALW", "CAA", "safety ↑", "over-refusal ↓", "capability ↑", "Δ safety", "Δ over-refusal"]
        table = []
        for r in sorted(abl, key=lambda r: list(ABLATION).index(r.method)):
            oalw, caa = ABLATION[r.method].oalw, ABLATION[r.method].caa
            table.append([r.name, "yes" if oalw else "no", "yes" if caa else "no", _c(r, "safety"), _c(r, "over_refusal"),
                          _c(r, "capability"),
                          _pp(r.get("safety"), ref.get("safety")) if ref else "—", _pp(r.get("over_refusal"), ref.get("over_refusal")) if ref else "—"])
        lines += [_table(headers, table), ""]

    sweep = [r for r in rows if r.sweep_param is not None]
    if sweep:
        param = sweep[0].sweep_param
        lines += [f"## Sweep over {param}", "", f"Each curve is one method trained at several values of `{param}`; "
                  "a curve further up and left is a better family of trade-offs.", ""]
        if "frontier" in figures:
            lines += [f"![frontier of each method over {param}]({figures['frontier']})", ""]
        lines += [_table(["method", param, "safety ↑", "over-refusal ↓", "capability ↑"],
                         [[method_title(r.method), f"{r.sweep_value:g}", _c(r, "safety"), _c(r, "over_refusal"),
                           _c(r, "capability")] for r in sorted(sweep, key=lambda r: (r.method, r.sweep_value or 0.0))]), ""]

    rep = [k for k in figures if k.startswith("repr:")]
    if "representations" in figures or rep:
        lines += ["## Representations before and after", "",
                  "The paper's diagnosis: over-refused prompts sit on the boundary between benign and malicious prompts in the "
                  "model's hidden states. The *centroid ratio* places each pseudo-malicious prompt between the benign centroid (0) "
                  "and the malicious centroid (1); the *probe accuracy* says how linearly separable benign and malicious prompts are. "
                  "Dashed black: the base model; one line per defense.", ""]
        if "representations" in figures:
            lines += [f"![pseudo-malicious centroid ratio and probe accuracy per layer]({figures['representations']})", ""]
        for key in rep:
            lines += [f"### {key.split(':', 1)[1]}", "", f"![{key.split(':', 1)[1]}]({figures[key]})", ""]
    sources = meta.get("sources", "completions, judgments and per-stage metrics are in the experiment's `stages/` folder")
    lines += ["## Reproduce", "", "```", meta.get("command", "mosr experiment CONFIG --out DIR"), "```", "",
              f"Every number above is in `summary.json` next to this page; {sources}.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- write
def _copy_analysis_figures(rows: Sequence[Row], folder: Path, limit_layers: bool = True) -> dict[str, str]:
    """Before/after figures of ``mosr analyze`` (first seed of each defended method), copied next to the report."""
    figs: dict[str, str] = {}
    for r in rows:
        if r.sweep_param is not None or r.method == "undefended":
            continue
        rec = next((x for x in r.records if x.get("analysis_dir")), None)
        if rec is None:
            continue
        src = Path(rec["analysis_dir"])
        for name, what in (("curves-compare.png", "layer metrics of the base model and after the defense"),
                           ("pca.png", "PCA of the representations, top row base model, bottom row after the defense")):
            if (src / name).is_file():
                dst = f"figures/{r.label.replace('/', '_')}-{name}"
                (folder / dst).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / name, folder / dst)
                figs[f"repr:{r.name}: {what}"] = dst
    return figs


def write_report(records: Sequence[dict[str, Any]], folder: str | Path, *, title: str = "mosr experiment",
                 config: dict[str, Any] | None = None, command: str | None = None, sources: str | None = None) -> Path:
    """Write ``report.md``, ``report.html``, figures and ``summary.json`` into ``folder``; returns the HTML path."""
    folder = Path(folder)
    (folder / "figures").mkdir(parents=True, exist_ok=True)
    rows = aggregate(records)
    figures: dict[str, str] = {}
    if plot_pareto([r for r in rows if r.sweep_param is None], folder / "figures/pareto.png"):
        figures["pareto"] = "figures/pareto.png"
    if plot_frontiers(rows, folder / "figures/frontier.png"):
        figures["frontier"] = "figures/frontier.png"
    if plot_representations(rows, folder / "figures/representations.png"):
        figures["representations"] = "figures/representations.png"
    figures.update(_copy_analysis_figures(rows, folder))
    config = config or {}
    first = records[0]["eval_metrics"] if records else {}
    meta = {
        "model": config.get("model", first.get("model")),
        "judge": first.get("judge"),
        "limit": (config.get("eval") or {}).get("limit"),
        "generated": now_iso(),
        "command": command or config.get("command") or "mosr experiment CONFIG --out DIR",
    }
    if sources:
        meta["sources"] = sources
    markdown = build_markdown(rows, figures, title=title, meta=meta)
    atomic_write_text(folder / "report.md", markdown)
    atomic_write_text(folder / "summary.json", dumps({
        "meta": meta,
        "rows": [{"label": r.label, "method": r.method, "sweep_param": r.sweep_param, "sweep_value": r.sweep_value, "seeds": r.seeds,
                  "perplexity": r.perplexity, "rates": {k: c.to_dict() for k, c in r.cells.items()}} for r in rows],
    }) + "\n")
    html = render_html(markdown, title=title, base_dir=folder)
    atomic_write_text(folder / "report.html", html)
    for name in ("report.md", "report.html", "summary.json"):
        _shareable(folder / name)
    return folder / "report.html"


def _shareable(path: Path) -> None:
    """Atomic writes create private files; a report is meant to be read by others (umask permitting)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def render_html(markdown: str, *, title: str, base_dir: Path) -> str:
    from mosr.report_html import markdown_to_html

    page = markdown_to_html(markdown, title=title, base_dir=base_dir)
    return page.replace("</style>", _CSS + "</style>", 1)
