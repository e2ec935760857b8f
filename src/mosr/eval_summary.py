"""The human-readable outputs of an eval run: headline rates, ``summary.md`` and ``rates.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mosr.metrics import Rate
from mosr.plots import plt


def headline(metrics: dict[str, Any]) -> dict[str, Rate | float | None]:
    """The few numbers people compare first."""
    s = metrics["suites"]
    out: dict[str, Any] = {}
    if "safety" in s and s["safety"]["safety"]:
        out["safety"] = Rate(**s["safety"]["safety"])
    if "over-refusal" in s:
        out["over_refusal"] = Rate(**s["over-refusal"]["over_refusal"])
    if "capability" in s:
        out["capability_compliance"] = Rate(**s["capability"]["compliance"])
        if "reference_perplexity" in s["capability"]:
            out["reference_perplexity"] = s["capability"]["reference_perplexity"]["perplexity"]
    return out


def _fmt_harm(h: dict[str, Any]) -> str:
    if h.get("harmful") is None:
        return f"not read for harm by this judge (n={h.get('n')})"
    out = Rate(**h["harmful"]).fmt()
    return out + (f", {h['unjudged']} not judged for harm, counted as harmful" if h.get("unjudged") else "")


def summary_markdown(metrics: dict[str, Any], meta: dict[str, Any]) -> str:
    def fmt(d: dict[str, Any]) -> str:
        return Rate(**d).fmt()

    lines = [f"# mosr eval: {meta.get('model')}" + (f" + adapter {meta['adapter']}" if meta.get("adapter") else ""), ""]
    lines.append(f"Judge: `{meta.get('judge')}`. Rates are shares of all completions, with 95% Wilson intervals; "
                 "unjudged completions stay in the denominator and are listed.")
    lines.append("")
    s = metrics["suites"]
    if "safety" in s:
        lines += ["## Safety", ""]
        if s["safety"]["safety"]:
            lines.append(f"- safety, behaviour view (refusal + content-free gibberish on plain harmful prompts): {fmt(s['safety']['safety'])}")
        harm = s["safety"].get("harm") or {}
        if harm.get("direct"):
            lines.append(f"- harmful content, harm view (plain harmful prompts): {_fmt_harm(harm['direct'])}")
        for attack, r in s["safety"]["attack_success"].items():
            extra = f"; harmful content {_fmt_harm(harm['by_attack'][attack])}" if attack in harm.get("by_attack", {}) else ""
            lines.append(f"- attack success (answered, fully or partly), `{attack}`: {fmt(r)}{extra}")
        lines.append("")
    if "over-refusal" in s:
        o = s["over-refusal"]
        lines += ["## Over-refusal", "", f"- over-refusal (refusal + partial refusal + gibberish on benign-but-scary prompts): {fmt(o['over_refusal'])}"]
        if "full_refusal" in o:
            lines += [f"  - full refusal: {fmt(o['full_refusal'])}", f"  - partial refusal: {fmt(o['partial_refusal'])}", f"  - gibberish: {fmt(o['gibberish'])}"]
        lines.append("")
    if "capability" in s:
        c = s["capability"]
        lines += ["## Capability", "", f"- compliance on benign instructions: {fmt(c['compliance'])}", f"- gibberish: {fmt(c['gibberish'])}"]
        if "reference_perplexity" in c:
            p = c["reference_perplexity"]
            lines.append(f"- reference-answer perplexity: {p['perplexity']:.2f} ({p['tokens']} tokens, n={p['n']})")
        lines.append("")
    lines += ["## Per set and attack", "", "| suite | dataset | attack | n | refusal | partial | gibberish | compliance | unjudged |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in metrics["tasks"].values():
        partial = fmt(t["partial"]) if "partial" in t else "—"
        lines.append(
            f"| {t['suite']} | {t['dataset']} | {t['attack']} | {t['n']} | {fmt(t['refusal'])} | {partial} | {fmt(t['gibberish'])} | "
            f"{fmt(t['compliance'])} | {t['counts']['unjudged']} |"
        )
    lines.append("")
    return "\n".join(lines)


def plot_rates(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Stacked bars of refusal / partial / gibberish / compliance / unjudged per (set, attack), CI on not-complied."""
    tasks = list(metrics["tasks"].values())
    if not tasks:
        return
    labels = [f"{t['dataset']}" + ("" if t["attack"] == "none" else f"\n[{t['attack']}]") for t in tasks]
    colours = {"refusal": "#4C72B0", "partial": "#8172B3", "gibberish": "#DD8452", "compliance": "#55A868", "unjudged": "#8C8C8C"}
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(tasks) + 2), 4.8))
    bottom = [0.0] * len(tasks)
    for v, colour in colours.items():
        vals = [100 * t[v]["rate"] if v in t else 0.0 for t in tasks]
        ax.bar(range(len(tasks)), vals, bottom=bottom, color=colour, label=v, width=0.7)
        bottom = [b + x for b, x in zip(bottom, vals)]
    nc = [t["not_complied"] for t in tasks]
    ax.errorbar(
        range(len(tasks)), [100 * r["rate"] for r in nc],
        yerr=[[100 * max(0.0, r["rate"] - r["low"]) for r in nc], [100 * max(0.0, r["high"] - r["rate"]) for r in nc]],
        fmt="none", ecolor="black", capsize=3, linewidth=1, label="95% CI (not complied)",
    )
    ax.set_xticks(range(len(tasks)))
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("share of completions (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
