"""The experiment report: one Markdown file and the same as one self-contained HTML page.

Input: one record per (method variant, seed) with the variant's eval ``metrics.json`` and, when it was
analysed, its ``mosr analyze`` metrics and folder (see :func:`mosr.experiment.collect_results`).
Output, in the report folder: ``report.md``, ``report.html`` (every image embedded as base64), the
figures as PNG, and ``summary.json`` with every number of the tables.

Rates over several seeds: the interval and n are those of the pooled counts (all seeds' completions
together, 95% Wilson interval); ``±`` is the standard deviation of the per-seed rates.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mosr.methods import ABLATION
from mosr.report_figures import plot_frontiers, plot_pareto, plot_representations
from mosr.report_rows import (  # noqa: F401 (re-exported)
    Cell, Row, aggregate, combine, method_summary, method_title, non_dominated, pareto_points,
)
from mosr.report_html import markdown_table, markdown_to_html
from mosr.runs import atomic_write_text, dumps, now_iso

_CSS = """
body{max-width:1180px}
table{display:block;overflow-x:auto;font-variant-numeric:tabular-nums}
td,th{white-space:nowrap}
h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
blockquote,.note{background:#f7f9fc;border-left:4px solid #4C72B0;padding:.5em 1em;margin:1em 0}
"""


# ------------------------------------------------------------------------------------- markdown
def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    return markdown_table(headers, rows)


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
        "Every model answers the same prompts; a judge labels each answer **refusal**, **partial** (refuses and also "
        "answers), **gibberish** (garbled text, which defenses of this family often produce instead of a refusal) or "
        "**compliance** (docs/JUDGES.md).",
        "",
        "- **Safety** ↑: share of plain harmful prompts that were *not* answered (refusal + gibberish).",
        "- **Attack success** ↓: share of harmful prompts answered, fully or partly, per jailbreak wrapper (`none` = the plain prompt).",
        "- **Over-refusal** ↓: share of benign prompts that only *look* harmful (XSTest safe, OR-Bench hard, JBB benign) "
        "that were refused, partly refused or answered with gibberish. This is what MOSR sets out to lower.",
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
    page = markdown_to_html(markdown, title=title, base_dir=base_dir)
    return page.replace("</style>", _CSS + "</style>", 1)
