"""``mosr eval``: generate completions for the suites, judge them, and write metrics.

Run folder layout (all written atomically or appended line by line):

* ``run.json`` — command, config, seed, versions, git revision, machine, model and data hashes.
* ``eval_config.json`` — the generation settings; a resumed run must match them.
* ``completions.jsonl`` — one record per (dataset, attack, sample), appended batch by batch, so an
  interrupted run resumes where it stopped and decodes the remaining prompts in the same batches.
* ``perplexity.jsonl`` — reference-answer NLL per capability sample.
* ``judgments.jsonl`` — one verdict per completion (rewritten by ``mosr judge``).
* ``metrics.json``, ``summary.md``, ``rates.png``.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mosr.attacks import get_attack
from mosr.data import Sample, load_dataset, samples_hash
from mosr.errors import ConfigError, RunError
from mosr.generation import generate
from mosr.judges import Judge, resolve_judge
from mosr.metrics import Rate, harm_rates, verdict_rates
from mosr.models import LoadedModel, encode_chat_pair
from mosr.progress import progress
from mosr.runs import RunDir, iter_jsonl, repair_jsonl
from mosr.suites import Task, resolve_suites, tasks_for

log = logging.getLogger(__name__)

COMPLETIONS = "completions.jsonl"
JUDGMENTS = "judgments.jsonl"
PERPLEXITY = "perplexity.jsonl"


@dataclass
class EvalConfig:
    """Settings of one evaluation run."""

    model: str = "default"
    adapter: str | None = None
    suites: list[str] = field(default_factory=lambda: ["over-refusal"])
    datasets: list[str] = field(default_factory=list)  # extra user CSV/JSONL files (suite "custom")
    prompt_column: str = "prompt"
    label_column: str | None = None
    limit: int | None = None  # first N samples of each (dataset, attack) task
    sets: list[str] = field(default_factory=list)  # keep only these tasks of the suites: "dataset" or "dataset|attack"
    judge: str = "default"
    max_new_tokens: int = 64
    batch_size: int = 32
    system: str | None = None
    seed: int = 0
    steering: str | None = None  # a `mosr steer` run folder, applied during generation (docs/STEERING.md)

    def __post_init__(self) -> None:
        self.suites = resolve_suites(self.suites) if (self.suites or not self.datasets) else []
        for path in self.datasets:
            load_dataset(path, prompt_column=self.prompt_column, label_column=self.label_column)  # validate early
        if self.sets:
            known = {k for t in tasks_for(self.suites) for k in (t.dataset, t.key)}
            unknown = [x for x in self.sets if x not in known]
            if unknown:
                raise ConfigError(f"sets: {unknown[0]!r} is not a set of suites {', '.join(self.suites)}; "
                                  f"known: {', '.join(sorted(known))}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ConfigError("max_new_tokens and batch_size must be >= 1")
        if self.steering is not None and not (Path(self.steering) / "steering.json").is_file():
            raise ConfigError(f"--steering {self.steering}: not a steering run folder (no steering.json); make one with mosr steer")

    def generation_key(self) -> dict[str, Any]:
        """Settings that change completions; a resumed run must keep them."""
        key = {k: getattr(self, k) for k in ("model", "adapter", "max_new_tokens", "batch_size", "system", "prompt_column")}
        if self.steering:
            key["steering"] = self.steering
        return key


def record_key(dataset: str, attack: str, sample_id: str) -> str:
    return f"{dataset}|{attack}|{sample_id}"


def task_samples(task: Task, limit: int | None, config: "EvalConfig | None" = None) -> list[Sample]:
    if task.suite == "custom" and config is not None:
        return load_dataset(task.dataset, limit=limit, prompt_column=config.prompt_column, label_column=config.label_column)
    return load_dataset(task.dataset, limit=limit)


def config_tasks(config: "EvalConfig") -> list[Task]:
    tasks = tasks_for(config.suites)
    if config.sets:
        tasks = [t for t in tasks if t.dataset in config.sets or t.key in config.sets]
    return tasks + [Task("custom", path) for path in config.datasets]


def _check_resumable(run: RunDir, config: EvalConfig) -> None:
    path = run / "eval_config.json"
    if path.is_file():
        old = run.read_json("eval_config.json")
        if old != config.generation_key():
            diff = {k: (old.get(k), v) for k, v in config.generation_key().items() if old.get(k) != v}
            raise RunError(
                f"{run.path} holds completions made with other settings {diff}; use a new --out folder"
            )
    else:
        run.write_json("eval_config.json", config.generation_key())


def generate_completions(loaded: LoadedModel, config: EvalConfig, run: RunDir) -> list[dict[str, Any]]:
    """Generate (or resume) the completions of every task; returns all records in task order."""
    path = run / COMPLETIONS
    repair_jsonl(path)
    existing = {rec["key"]: rec for rec in iter_jsonl(path)}
    out: list[dict[str, Any]] = []
    for task in config_tasks(config):
        samples = task_samples(task, config.limit, config)
        attack = get_attack(task.attack)
        pairs = [attack.apply(s) for s in samples]
        keys = [record_key(task.dataset, task.attack, s.id) for s in samples]
        done = [k in existing for k in keys]
        if not all(done):

            def save(idx: list[int], texts: list[str], samples=samples, pairs=pairs, keys=keys, task=task) -> None:
                recs = []
                for i, text in zip(idx, texts):
                    if keys[i] in existing:
                        continue
                    rec = {
                        "key": keys[i], "suite": task.suite, "dataset": task.dataset, "attack": task.attack,
                        "sample_id": samples[i].id, "label": samples[i].label, "category": samples[i].category,
                        "prompt": pairs[i][0], "prefill": pairs[i][1], "completion": text,
                    }
                    existing[keys[i]] = rec
                    recs.append(rec)
                run.append_jsonl(COMPLETIONS, recs)

            generate(
                loaded, [p for p, _ in pairs], response_prefixes=[f for _, f in pairs],
                max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, system=config.system,
                desc=f"{task.dataset} [{task.attack}]", on_batch=save, done=done,
            )
        out.extend(existing[k] for k in keys)
    return out


@torch.inference_mode()
def reference_nll(loaded: LoadedModel, samples: Sequence[Sample], *, system: str | None = None, max_length: int = 512) -> list[dict[str, Any]]:
    """Mean token NLL of each sample's reference answer given its prompt (teacher forcing)."""
    rows = []
    for s in progress(samples, desc="reference perplexity", unit="answer"):
        if not s.reference:
            continue
        ids, n_prompt = encode_chat_pair(loaded.tokenizer, s.prompt, s.reference, system=system, max_length=max_length)
        if len(ids) <= n_prompt:
            continue
        x = torch.tensor([ids], device=loaded.device)
        logits = loaded.model(input_ids=x).logits[0, :-1].float()
        targets = x[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")[n_prompt - 1 :]
        rows.append({"sample_id": s.id, "tokens": int(nll.numel()), "nll_sum": float(nll.sum())})
    return rows


def judge_records(records: list[dict[str, Any]], judge: str | Judge) -> list[dict[str, Any]]:
    """Judge every completion; the judge decides, and cannot-judge stays visible as ``unjudged``.

    ``judge`` is a registered judge name or any object following the :class:`mosr.judges.Judge`
    protocol. Attacks that prefill the assistant turn are judged on the model's own text only.
    """
    judge_obj = resolve_judge(judge)
    judgments = judge_obj.judge([r["prompt"] or r.get("prefill") or "" for r in records], [r["completion"] for r in records])
    if len(judgments) != len(records):
        raise RunError(f"judge {judge_obj.name!r} returned {len(judgments)} verdicts for {len(records)} completions")
    return [
        {
            "key": r["key"], "suite": r["suite"], "dataset": r["dataset"], "attack": r["attack"],
            "sample_id": r["sample_id"], "category": r.get("category"), "verdict": j.verdict, "judge": j.judge,
            "explanation": j.explanation, "score": j.score,
            "harmful": j.harmful, "harm_explanation": j.harm_explanation, "harm_score": j.harm_score,
        }
        for r, j in zip(records, judgments)
    ]


def compute_metrics(judgments: list[dict[str, Any]], perplexity: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Rates per task, per category and per suite (pure function of the judgments)."""
    by_task: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for j in judgments:
        by_task[(j["suite"], j["dataset"], j["attack"])].append(j)
    tasks: dict[str, Any] = {}
    for (suite, dataset, attack), rows in by_task.items():
        cats: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            cats[str(r.get("category"))].append(r["verdict"])
        tasks[f"{dataset}|{attack}"] = {
            "suite": suite, "dataset": dataset, "attack": attack,
            **verdict_rates(r["verdict"] for r in rows),
            "by_category": {c: verdict_rates(v) for c, v in sorted(cats.items())},
        }
    suites: dict[str, Any] = {}
    safety = [j for j in judgments if j["suite"] == "safety"]
    if safety:
        direct = [j for j in safety if j["attack"] == "none"]
        attacks: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for j in safety:
            attacks[j["attack"]].append(j)
        direct_rates = verdict_rates(j["verdict"] for j in direct) if direct else None
        suites["safety"] = {
            # behaviour view (the headline): refusal or content-free gibberish
            "safety": direct_rates["defended"] if direct_rates else None,
            "direct": direct_rates,
            "attack_success": {a: verdict_rates(j["verdict"] for j in v)["answered"] for a, v in attacks.items()},
            "all": verdict_rates(j["verdict"] for j in safety),
            # harm view: meaningful harmful content, whatever the behaviour
            "harm": {
                "direct": harm_rates(j.get("harmful") for j in direct) if direct else None,
                "by_attack": {a: harm_rates(j.get("harmful") for j in v) for a, v in attacks.items()},
            },
        }
    over = [j["verdict"] for j in judgments if j["suite"] == "over-refusal"]
    if over:
        rates = verdict_rates(over)
        suites["over-refusal"] = {
            "over_refusal": rates["not_complied"], "full_refusal": rates["refusal"],
            "partial_refusal": rates["partial"], "gibberish": rates["gibberish"], "all": rates,
        }
    cap = [j["verdict"] for j in judgments if j["suite"] == "capability"]
    if cap:
        rates = verdict_rates(cap)
        entry: dict[str, Any] = {"compliance": rates["compliance"], "gibberish": rates["gibberish"], "all": rates}
        if perplexity:
            tokens = sum(p["tokens"] for p in perplexity)
            nll = sum(p["nll_sum"] for p in perplexity) / max(tokens, 1)
            entry["reference_perplexity"] = {"perplexity": math.exp(nll), "mean_nll": nll, "tokens": tokens, "n": len(perplexity)}
        suites["capability"] = entry
    return {"tasks": tasks, "suites": suites, "n_completions": len(judgments)}


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
    out = Rate(**h["harmful"]).fmt()
    return out + (f", {h['unjudged']} not judged for harm" if h.get("unjudged") else "")


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def finish_run(run: RunDir, judge: str | Judge) -> dict[str, Any]:
    """Judge the stored completions and write judgments, metrics, summary and plot."""
    judge = resolve_judge(judge)
    judge_name = judge.name
    records = run.read_jsonl(COMPLETIONS)
    if not records:
        raise RunError(f"{run.path} has no completions to judge")
    meta = run.read_json("run.json") if (run / "run.json").is_file() else {}
    judgments = judge_records(records, judge)
    run.write_text(JUDGMENTS, "".join(json.dumps(j, ensure_ascii=False) + "\n" for j in judgments))
    perplexity = run.read_jsonl(PERPLEXITY) if (run / PERPLEXITY).is_file() else None
    metrics = compute_metrics(judgments, perplexity)
    cfg = meta.get("config", {})
    metrics["judge"] = judge_name
    metrics["model"] = cfg.get("model")
    metrics["adapter"] = cfg.get("adapter")
    metrics["steering"] = cfg.get("steering")
    run.write_json("metrics.json", metrics)
    info = {"model": cfg.get("model"), "adapter": cfg.get("adapter"), "judge": judge_name}
    run.write_text("summary.md", summary_markdown(metrics, info))
    plot_rates(metrics, run / "rates.png", f"{cfg.get('model')}{' + ' + str(cfg.get('adapter')) if cfg.get('adapter') else ''} (judge: {judge_name})")
    return metrics


def run_eval(config: EvalConfig, out: str | Path, *, loaded: LoadedModel | None = None, judge: Judge | None = None) -> dict[str, Any]:
    """Generate (resuming if possible), judge and summarise. Returns the metrics.

    ``judge`` overrides ``config.judge`` with a judge object of the caller's (any
    :class:`mosr.judges.Judge`); its ``name`` is recorded.
    """
    from mosr.models import load_model

    judge = resolve_judge(judge if judge is not None else config.judge)  # fail on an unknown judge before any generation
    if judge.name != config.judge:
        config.judge = judge.name
    tasks = config_tasks(config)
    data_hashes = {t.dataset: samples_hash(task_samples(t, config.limit, config)) for t in tasks}
    if loaded is None:
        loaded = load_model(config.model, config.adapter)  # fails before anything is written
    from mosr.steering.eval import steering_for_eval

    steering, steering_meta = steering_for_eval(config.steering, loaded)
    run = RunDir(out)
    _check_resumable(run, config)
    run.write_metadata(command="eval", config=asdict(config), seed=config.seed, data_hashes=data_hashes, model=loaded.describe(),
                       extra={"steering": steering_meta} if steering_meta else None)
    torch.manual_seed(config.seed)
    with steering(loaded):
        generate_completions(loaded, config, run)
    if "capability" in config.suites and not (run / PERPLEXITY).is_file():
        rows: list[dict[str, Any]] = []
        for task in tasks:
            if task.suite == "capability":
                rows += reference_nll(loaded, task_samples(task, config.limit), system=config.system)
        run.write_text(PERPLEXITY, "".join(json.dumps(r) + "\n" for r in rows))
    return finish_run(run, judge)


def load_verdicts(run_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """(dataset, attack, sample_id) -> verdict, from an eval run folder."""
    run = RunDir(run_dir, create=False)
    return {(j["dataset"], j["attack"], j["sample_id"]): j["verdict"] for j in run.read_jsonl(JUDGMENTS)}
