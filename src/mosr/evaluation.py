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

import hashlib
import json
import logging
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mosr.attacks import get_attack
from mosr.config import from_mapping, load_config
from mosr.data import Sample, load_dataset, samples_hash
from mosr.errors import ConfigError, MosrError, RunError
from mosr.generation import generate
from mosr.judges import Judge, resolve_judge
from mosr.metrics import Rate, harm_rates, verdict_rates
from mosr.models import LoadedModel, encode_chat_pair
from mosr.plots import plt
from mosr.progress import progress
from mosr.records import COMPLETIONS, JUDGMENTS, METRICS, PERPLEXITY, JudgmentRecord, as_judgment, read_judgments, write_judgments, write_jsonl
from mosr.runs import LOCK_FILE, RunDir, check_run_kind, iter_jsonl, repair_jsonl
from mosr.suites import Task, resolve_suites, tasks_for

log = logging.getLogger(__name__)

LONG_PROMPTS = ("refuse", "truncate")
DERIVED = ("judgments.jsonl", "metrics.json", "summary.md", "rates.png")  # remade from the completions at the end of a run


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
    long_prompts: str = "refuse"  # a prompt longer than the context minus max_new_tokens: refuse, or truncate (cut from the middle)
    max_batch_tokens: int = 32768  # KV-cache budget per generation batch: rows x (longest prompt + max_new_tokens)
    steering: str | None = None  # a `mosr steer` run folder, applied during generation (docs/STEERING.md)

    def __post_init__(self) -> None:
        self.suites = resolve_suites(self.suites) if (self.suites or not self.datasets) else []
        seen: dict[Path, str] = {}
        for path in self.datasets:
            load_dataset(path, prompt_column=self.prompt_column, label_column=self.label_column)  # validate early
            same = seen.setdefault(Path(path).resolve(), path)
            if same != path or self.datasets.count(path) > 1:
                raise ConfigError(f"--dataset {path} is given twice{f' (as {same})' if same != path else ''}; its prompts would count twice")
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
        if self.long_prompts not in LONG_PROMPTS:
            raise ConfigError(f"long_prompts must be one of {', '.join(LONG_PROMPTS)}, got {self.long_prompts!r}")
        if self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")
        if self.steering is not None and not (Path(self.steering) / "steering.json").is_file():
            raise ConfigError(f"--steering {self.steering}: not a steering run folder (no steering.json); make one with mosr steer")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalConfig:
        return from_mapping(cls, data, what="eval")

    @classmethod
    def load(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> EvalConfig:
        """Defaults, then the YAML file, then ``overrides``; unknown keys and wrong types fail."""
        return load_config(cls, path, overrides, what="eval")

    def generation_key(self) -> dict[str, Any]:
        """Settings that change completions; a resumed run must keep them."""
        key = {k: getattr(self, k) for k in ("model", "adapter", "max_new_tokens", "batch_size", "system", "prompt_column",
                                             "long_prompts", "max_batch_tokens")}
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


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def settings_hash(loaded: LoadedModel, config: EvalConfig) -> str:
    """What produced a completion besides its prompt: the generation settings, the base weights and the adapter's weights."""
    adapter = None
    if config.adapter is not None:
        from mosr.models import ADAPTER_WEIGHTS, file_sha256

        weights = Path(config.adapter) / ADAPTER_WEIGHTS
        adapter = file_sha256(weights) if weights.is_file() else None
    steering = None
    if config.steering is not None:
        from mosr.models import file_sha256

        steering = {p.name: file_sha256(p) for p in sorted(Path(config.steering).glob("steering.*")) if p.is_file()}
    return _short_hash({**config.generation_key(), "fingerprint": loaded.fingerprint, "adapter_sha256": adapter, "steering_sha256": steering,
                        "model_files": _local_files(config.model), "revision": getattr(getattr(loaded.model, "config", None), "_commit_hash", None),
                        "chat_template": _short_hash(getattr(loaded.tokenizer, "chat_template", None))})


def _local_files(spec: str) -> list[Any] | None:
    """Name, size and modification time of a local model folder's files: weights replaced in place make new completions."""
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        return None
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()]


@dataclass
class TaskPlan:
    """The prompts of one (dataset, attack) task, as the model will see them, and what keys their records."""

    task: Task
    samples: list[Sample]
    data_hash: str  # of the task's samples (after --limit): a record is reused only for the same data
    keys: list[str]
    prompts: list[str]  # the prompt as judged (attack applied)
    prefills: list[str]
    model_prompts: list[str]  # the prompt given to the model (cut from the middle with long_prompts=truncate)
    prompt_hashes: list[str]
    truncated: dict[int, dict[str, int]] = field(default_factory=dict)


def _n_tokens(tok: Any, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _cut_middle(tok: Any, prompt: str, prefill: str, system: str | None, budget: int) -> tuple[str, int]:
    """Drop tokens from the middle of ``prompt`` until the rendered prompt fits ``budget`` tokens."""
    from mosr.models import format_prompt

    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    n = _n_tokens(tok, format_prompt(tok, prompt, system=system, response_prefix=prefill))
    keep = len(ids) - (n - budget)
    while True:
        if keep < 2:
            raise ConfigError(f"the chat template and prefill alone take more than {budget} tokens; lower max_new_tokens")
        head, tail = (keep + 1) // 2, keep // 2
        text = tok.decode(ids[:head]) + tok.decode(ids[len(ids) - tail :])
        n = _n_tokens(tok, format_prompt(tok, text, system=system, response_prefix=prefill))
        if n <= budget:
            return text, n
        keep -= n - budget


def plan_tasks(loaded: LoadedModel, config: EvalConfig) -> list[TaskPlan]:
    """Every task's prompts, checked against the model's context before anything is written."""
    from mosr.models import context_length, format_prompt

    tok = loaded.tokenizer
    context = context_length(loaded)
    budget = context - config.max_new_tokens if context is not None else None
    if budget is not None and budget < 1:
        raise ConfigError(f"max_new_tokens {config.max_new_tokens} leaves no room for a prompt in the model's context of {context} "
                          f"tokens; use at most {context - 1}")
    plans = []
    for task in config_tasks(config):
        samples = task_samples(task, config.limit, config)
        attack = get_attack(task.attack)
        pairs = [attack.apply(s) for s in samples]
        plan = TaskPlan(task, samples, samples_hash(samples), [record_key(task.dataset, task.attack, s.id) for s in samples],
                        [p for p, _ in pairs], [f for _, f in pairs], [p for p, _ in pairs], [])
        for i, (prompt, prefill) in enumerate(pairs):
            if budget is None:
                break
            n = _n_tokens(tok, format_prompt(tok, prompt, system=config.system, response_prefix=prefill))
            if n <= budget:
                continue
            if config.long_prompts == "refuse":
                raise ConfigError(
                    f"{task.dataset}: sample {samples[i].id!r} (row {i + 1}) has {n} prompt tokens; the model's context {context} "
                    f"minus max_new_tokens {config.max_new_tokens} leaves {budget}. Shorten it, or pass --long-prompts truncate "
                    "to cut long prompts from the middle"
                )
            plan.model_prompts[i], kept = _cut_middle(tok, prompt, prefill, config.system, budget)
            plan.truncated[i] = {"prompt_tokens": n, "kept_tokens": kept}
        plan.prompt_hashes = [_short_hash([p, f, m]) for p, f, m in zip(plan.prompts, plan.prefills, plan.model_prompts)]
        if plan.truncated:
            log.warning("%s [%s]: %d prompts longer than %d tokens were cut from the middle (recorded in their completions)",
                        task.dataset, task.attack, len(plan.truncated), budget)
        plans.append(plan)
    return plans


def check_resumable(run: RunDir, config: EvalConfig) -> None:
    """Refuse, without writing, a rerun whose generation settings differ from the folder's."""
    path = run / "eval_config.json"
    if not path.is_file():
        return
    old = run.read_json("eval_config.json")
    new = config.generation_key()
    if old != new:
        diff = "; ".join(f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v)
        raise RunError(f"{run.path} holds completions made with other settings ({diff}); rerun with the folder's settings "
                       "to resume, or use a new --out folder")


def _wanted(plans: list[TaskPlan], settings: str) -> dict[str, tuple[str, str, str]]:
    return {k: (p.data_hash, h, settings) for p in plans for k, h in zip(p.keys, p.prompt_hashes)}


def prune_completions(run: RunDir, plans: list[TaskPlan], settings: str) -> dict[str, dict[str, Any]]:
    """Keep only the stored completions this request asks for, made from the same data, prompt and settings.

    The file is rewritten (atomically) when anything is dropped, so the folder never mixes runs.
    Returns the kept records by key.
    """
    path = run / COMPLETIONS
    repair_jsonl(path)
    wanted = _wanted(plans, settings)
    kept: dict[str, dict[str, Any]] = {}
    dropped = 0
    for rec in iter_jsonl(path):
        key = rec.get("key")
        if key in wanted and key not in kept and (rec.get("data_hash"), rec.get("prompt_hash"), rec.get("settings_hash")) == wanted[key]:
            kept[key] = rec
        else:
            dropped += 1
    if dropped:
        log.warning("%s: dropped %d stored completions that this request does not ask for or that other data, prompts or "
                    "settings produced; they are generated again where needed", run.path, dropped)
        _rewrite(run, [kept[k] for k in wanted if k in kept])
    return kept


def _rewrite(run: RunDir, records: list[dict[str, Any]]) -> None:
    write_jsonl(run, COMPLETIONS, records)


def generate_completions(loaded: LoadedModel, config: EvalConfig, run: RunDir, plans: list[TaskPlan] | None = None) -> list[dict[str, Any]]:
    """Generate (or resume) the completions of every task; returns exactly the requested records, in task order.

    A stored record is reused only when its key, data hash, prompt hash and settings hash all match;
    at the end ``completions.jsonl`` holds exactly these records in task order.
    """
    plans = plans if plans is not None else plan_tasks(loaded, config)
    settings = settings_hash(loaded, config)
    existing = prune_completions(run, plans, settings)
    out: list[dict[str, Any]] = []
    for plan in plans:
        task = plan.task
        done = [k in existing for k in plan.keys]
        if not all(done):

            def save(idx: list[int], texts: list[str], plan: TaskPlan = plan) -> None:
                recs = []
                for i, text in zip(idx, texts):
                    if plan.keys[i] in existing:
                        continue
                    s = plan.samples[i]
                    rec = {
                        "key": plan.keys[i], "suite": plan.task.suite, "dataset": plan.task.dataset, "attack": plan.task.attack,
                        "sample_id": s.id, "label": s.label, "category": s.category,
                        "prompt": plan.prompts[i], "prefill": plan.prefills[i], "completion": text,
                        "data_hash": plan.data_hash, "prompt_hash": plan.prompt_hashes[i], "settings_hash": settings,
                    }
                    if i in plan.truncated:
                        rec["truncated"] = plan.truncated[i]
                        rec["model_prompt"] = plan.model_prompts[i]
                    existing[plan.keys[i]] = rec
                    recs.append(rec)
                run.append_jsonl(COMPLETIONS, recs)

            generate(
                loaded, plan.model_prompts, response_prefixes=plan.prefills,
                max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, system=config.system,
                desc=f"{task.dataset} [{task.attack}]", on_batch=save, done=done, max_batch_tokens=config.max_batch_tokens,
            )
        out.extend(existing[k] for k in plan.keys)
    if [r["key"] for r in run.read_jsonl(COMPLETIONS)] != [r["key"] for r in out]:
        _rewrite(run, out)  # task order, so a resumed run's file is the same as an uninterrupted run's
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


def judge_records(records: list[dict[str, Any]], judge: str | Judge) -> list[JudgmentRecord]:
    """Judge every completion; the judge decides, and cannot-judge stays visible as ``unjudged``.

    ``judge`` is a registered judge name or any object following the :class:`mosr.judges.Judge`
    protocol. Attacks that prefill the assistant turn are judged on the model's own text only.
    """
    judge_obj = resolve_judge(judge)
    judgments = judge_obj.judge([r["prompt"] or r.get("prefill") or "" for r in records], [r["completion"] for r in records])
    if len(judgments) != len(records):
        raise RunError(f"judge {judge_obj.name!r} returned {len(judgments)} verdicts for {len(records)} completions")
    return [
        JudgmentRecord(
            key=r["key"], suite=r["suite"], dataset=r["dataset"], attack=r["attack"],
            sample_id=r["sample_id"], category=r.get("category"), verdict=j.verdict, judge=j.judge,
            explanation=j.explanation, score=j.score,
            harmful=j.harmful, harm_explanation=j.harm_explanation, harm_score=j.harm_score,
        )
        for r, j in zip(records, judgments)
    ]


def compute_metrics(judgments: Sequence[JudgmentRecord | Mapping[str, Any]],
                    perplexity: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Rates per task, per category and per suite (pure function of the judgments)."""
    judgments = [as_judgment(j) for j in judgments]
    by_task: dict[tuple[str, str, str], list[JudgmentRecord]] = defaultdict(list)
    for j in judgments:
        by_task[(j.suite, j.dataset, j.attack)].append(j)
    tasks: dict[str, Any] = {}
    for (suite, dataset, attack), rows in by_task.items():
        cats: dict[str, list[str]] = defaultdict(list)
        for r in rows:
            cats[str(r.category)].append(r.verdict)
        tasks[f"{dataset}|{attack}"] = {
            "suite": suite, "dataset": dataset, "attack": attack,
            **verdict_rates(r.verdict for r in rows),
            "by_category": {c: verdict_rates(v) for c, v in sorted(cats.items())},
        }
    suites: dict[str, Any] = {}
    safety = [j for j in judgments if j.suite == "safety"]
    if safety:
        direct = [j for j in safety if j.attack == "none"]
        attacks: dict[str, list[JudgmentRecord]] = defaultdict(list)
        for j in safety:
            attacks[j.attack].append(j)
        direct_rates = verdict_rates(j.verdict for j in direct) if direct else None
        suites["safety"] = {
            # behaviour view (the headline): refusal or content-free gibberish
            "safety": direct_rates["defended"] if direct_rates else None,
            "direct": direct_rates,
            "attack_success": {a: verdict_rates(j.verdict for j in v)["answered"] for a, v in attacks.items()},
            "all": verdict_rates(j.verdict for j in safety),
            # harm view: meaningful harmful content, whatever the behaviour
            "harm": {
                "direct": harm_rates(j.harmful for j in direct) if direct else None,
                "by_attack": {a: harm_rates(j.harmful for j in v) for a, v in attacks.items()},
            },
        }
    over = [j.verdict for j in judgments if j.suite == "over-refusal"]
    if over:
        rates = verdict_rates(over)
        suites["over-refusal"] = {
            "over_refusal": rates["not_complied"], "full_refusal": rates["refusal"],
            "partial_refusal": rates["partial"], "gibberish": rates["gibberish"], "all": rates,
        }
    cap = [j.verdict for j in judgments if j.suite == "capability"]
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


def finish_run(run: RunDir, judge: str | Judge, records: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Judge the completions (``records``, default: the stored ones) and write judgments, metrics, summary and plot.

    A run with fewer completions than it asked for (``expected_completions`` in ``run.json``) is marked
    ``incomplete`` in the metrics and the summary.
    """
    judge = resolve_judge(judge)
    judge_name = judge.name
    records = records if records is not None else run.read_jsonl(COMPLETIONS)
    if not records:
        raise RunError(f"{run.path} has no completions to judge")
    for i, rec in enumerate(records, 1):
        missing = [k for k in ("key", "suite", "dataset", "attack", "sample_id", "prompt", "completion") if not isinstance(rec.get(k), str)]
        if missing:
            raise RunError(f"{run / COMPLETIONS}: record {i} lacks {', '.join(missing)}; the file was damaged, rerun `mosr eval` "
                           "into a new --out")
    keys = [rec["key"] for rec in records]
    if len(set(keys)) != len(keys):
        raise RunError(f"{run / COMPLETIONS} holds {len(keys) - len(set(keys))} duplicate records; rerun the same `mosr eval` "
                       "command into the folder to repair it")
    meta = run.read_json("run.json") if (run / "run.json").is_file() else {}
    judgments = judge_records(records, judge)
    write_judgments(run, judgments)
    perplexity = run.read_jsonl(PERPLEXITY) if (run / PERPLEXITY).is_file() else None
    metrics = compute_metrics(judgments, perplexity)
    cfg = meta.get("config", {})
    metrics["judge"] = judge_name
    metrics["model"] = cfg.get("model")
    metrics["adapter"] = cfg.get("adapter")
    metrics["steering"] = cfg.get("steering")
    metrics["truncated_prompts"] = sum(1 for r in records if r.get("truncated"))
    expected = meta.get("expected_completions")
    if isinstance(expected, int) and len(records) < expected:
        metrics["incomplete"] = {"completions": len(records), "expected": expected}
    run.write_json(METRICS, metrics)
    info = {"model": cfg.get("model"), "adapter": cfg.get("adapter"), "judge": judge_name}
    summary = summary_markdown(metrics, info)
    if "incomplete" in metrics:
        title, _, rest = summary.partition("\n")
        summary = (f"{title}\n\n**Incomplete run: {len(records)} of {expected} completions.** Rerun the same `mosr eval` command "
                   f"to finish it; the rates below cover only the finished completions.\n{rest}")
    run.write_text("summary.md", summary)
    plot_rates(metrics, run / "rates.png", f"{cfg.get('model')}{' + ' + str(cfg.get('adapter')) if cfg.get('adapter') else ''} (judge: {judge_name})")
    return metrics


def _update_perplexity(loaded: LoadedModel, config: EvalConfig, run: RunDir, plans: list[TaskPlan], settings: str) -> None:
    """Reference perplexity of the capability tasks, kept only while their data and settings are unchanged."""
    path = run / PERPLEXITY
    cap = [p for p in plans if p.task.suite == "capability"]
    if not cap:
        path.unlink(missing_ok=True)  # a file from an earlier request would enter the metrics
        return
    request = _short_hash([[p.task.dataset, p.data_hash] for p in cap] + [settings])
    stored = run.read_jsonl(PERPLEXITY) if path.is_file() else []
    if stored and all(r.get("request_hash") == request for r in stored):
        return
    rows: list[dict[str, Any]] = []
    for plan in cap:
        rows += [{**r, "request_hash": request} for r in reference_nll(loaded, plan.samples, system=config.system)]
    write_jsonl(run, PERPLEXITY, rows, ensure_ascii=True)


def run_eval(config: EvalConfig, out: str | Path, *, loaded: LoadedModel | None = None, judge: Judge | None = None) -> dict[str, Any]:
    """Generate (resuming if possible), judge and summarise. Returns the metrics.

    Everything that can refuse the run (judge, datasets, model, prompt lengths, the folder's settings)
    is checked before anything is written; a refused command leaves the folder as it was. ``judge``
    overrides ``config.judge`` with a judge object of the caller's (any :class:`mosr.judges.Judge`);
    its ``name`` is recorded.
    """
    from mosr.models import load_model

    judge = resolve_judge(judge if judge is not None else config.judge)  # fail on an unknown judge before any generation
    if judge.name != config.judge:
        config.judge = judge.name
    tasks = config_tasks(config)
    for t in tasks:
        task_samples(t, config.limit, config)  # fail on a bad dataset before the model loads
    if loaded is None:
        loaded = load_model(config.model, config.adapter)  # fails before anything is written
    plans = plan_tasks(loaded, config)
    from mosr.steering.eval import steering_for_eval  # mosr.steering imports this module

    steering, steering_meta = steering_for_eval(config.steering, loaded)  # refuses a foreign artifact before any write
    out = Path(out)
    check_run_kind(out, "eval")
    if (out / "eval_config.json").is_file():
        check_resumable(RunDir(out, create=False), config)
    fresh, existed = not (out / "run.json").is_file(), out.exists()
    run = RunDir(out)
    try:
        with run.lock("mosr eval"):
            if (out / "eval_config.json").is_file():
                check_resumable(run, config)  # again, now that no other command can change the folder
            records = _accepted_eval(loaded, config, run, plans, fresh, steering, steering_meta)
            return finish_run(run, judge, records)
    except MosrError:
        if not existed and [p.name for p in run.path.iterdir()] == [LOCK_FILE]:
            (run / LOCK_FILE).unlink()
            run.path.rmdir()  # a failed first run leaves no folder behind
        raise


def _accepted_eval(
    loaded: LoadedModel, config: EvalConfig, run: RunDir, plans: list[TaskPlan], fresh: bool,
    steering: Any, steering_meta: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """Write the metadata, then generate; a failed first run takes its metadata back."""
    try:
        settings = settings_hash(loaded, config)
        run.write_json("eval_config.json", config.generation_key())
        for name in DERIVED:
            (run / name).unlink(missing_ok=True)  # remade below from exactly the requested completions
        run.write_metadata(command="eval", config=asdict(config), seed=config.seed, model=loaded.describe(),
                           data_hashes={p.task.dataset: p.data_hash for p in plans},
                           extra={"expected_completions": sum(len(p.keys) for p in plans),
                                  "truncated_prompts": sum(len(p.truncated) for p in plans),
                                  **({"steering": steering_meta} if steering_meta else {})})
        torch.manual_seed(config.seed)
        with steering(loaded):
            records = generate_completions(loaded, config, run, plans)
        _update_perplexity(loaded, config, run, plans, settings)
    except MosrError:
        if fresh and not run.read_jsonl(COMPLETIONS):
            for name in ("run.json", "eval_config.json", COMPLETIONS):
                (run / name).unlink(missing_ok=True)
        raise
    return records


def load_verdicts(run_dir: str | Path) -> dict[tuple[str, str, str], str]:
    """(dataset, attack, sample_id) -> verdict, from an eval run folder."""
    run = RunDir(run_dir, create=False)
    if not (run / JUDGMENTS).is_file():
        return {}
    return {(j.dataset, j.attack, j.sample_id): j.verdict for j in read_judgments(run_dir)}
