"""``mosr eval``: generate completions for the suites, judge them, and write metrics.

Run folder layout (all written atomically or appended line by line):

* ``run.json`` — command, config, seed, versions, git revision, machine, model and data hashes.
* ``eval_config.json`` — the generation settings; a resumed run must match them.
* ``completions.jsonl`` — one record per (dataset, attack, sample), appended batch by batch, so an
  interrupted run resumes where it stopped and decodes the remaining prompts in the same batches.
  Under several processes (:mod:`mosr.distributed`) each process but the main one appends to its own
  ``completions.rankN.jsonl``; the main process merges those into ``completions.jsonl`` at the end,
  and at the start of any later run, so an interrupted run resumes with any number of processes.
* ``perplexity.jsonl`` — reference-answer NLL per capability sample.
* ``judgments.jsonl`` — one verdict per completion (rewritten by ``mosr judge``).
* ``metrics.json``, ``summary.md``, ``rates.png``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mosr.attacks import ATTACKS, get_attack
from mosr.data import Sample, samples_hash
from mosr.distributed import ProcessGroup, process_group
from mosr.errors import ConfigError, MosrError, RunError
from mosr.generation import generate
from mosr.eval_config import LONG_PROMPTS, EvalConfig, config_tasks, record_key, task_samples  # noqa: F401 (re-exported)
from mosr.eval_store import RANK_JOURNAL, merge_completions, prune_completions  # noqa: F401 (re-exported)
from mosr.eval_summary import headline, plot_rates, summary_markdown  # noqa: F401 (re-exported)
from mosr.judges import Judge, resolve_judge, rules_fingerprint
from mosr.metrics import compute_metrics  # noqa: F401 (re-exported)
from mosr.models import ADAPTER_WEIGHTS, LoadedModel, context_length, encode_chat_pair, file_sha256, format_prompt, load_model
from mosr.progress import progress
from mosr.records import COMPLETIONS, JUDGMENTS, METRICS, PERPLEXITY, JudgmentRecord, read_judgments, write_judgments, write_jsonl
from mosr.runs import LOCK_FILE, RunDir, check_run_kind
from mosr.suites import Task

log = logging.getLogger(__name__)

DERIVED = ("judgments.jsonl", "metrics.json", "summary.md", "rates.png")  # remade from the completions at the end of a run


def _short_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, ensure_ascii=False, sort_keys=True).encode()).hexdigest()[:16]


def settings_hash(loaded: LoadedModel, config: EvalConfig) -> str:
    """What produced a completion besides its prompt: the generation settings, the base weights and the adapter's weights."""
    adapter = None
    if config.adapter is not None:
        weights = Path(config.adapter) / ADAPTER_WEIGHTS
        adapter = file_sha256(weights) if weights.is_file() else None
    steering = None
    if config.steering is not None:
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
            n = _n_tokens(tok, format_prompt(tok, prompt, system=config.system, response_prefix=prefill))
            if budget is not None and n > budget:
                if config.long_prompts == "refuse":
                    raise ConfigError(
                        f"{task.dataset}: sample {samples[i].id!r} (row {i + 1}) has {n} prompt tokens; the model's context {context} "
                        f"minus max_new_tokens {config.max_new_tokens} leaves {budget}. Shorten it, or pass --long-prompts truncate "
                        "to cut long prompts from the middle"
                    )
                plan.model_prompts[i], kept = _cut_middle(tok, prompt, prefill, config.system, budget)
                plan.truncated[i] = {"prompt_tokens": n, "kept_tokens": kept}
                n = kept
            if n + config.max_new_tokens > config.max_batch_tokens:  # generation would refuse it, after earlier tasks ran
                raise ConfigError(
                    f"{task.dataset}: sample {samples[i].id!r} (row {i + 1}) needs {n} prompt tokens + max_new_tokens "
                    f"{config.max_new_tokens} of KV cache, above max_batch_tokens {config.max_batch_tokens}; raise "
                    f"--max-batch-tokens to at least {n + config.max_new_tokens}"
                )
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
        diff = "; ".join(f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in dict.fromkeys([*new, *old]) if old.get(k) != new.get(k))
        raise RunError(f"{run.path} holds completions made with other settings ({diff}); rerun with the folder's settings "
                       "to resume, or use a new --out folder")


def generate_completions(loaded: LoadedModel, config: EvalConfig, run: RunDir, plans: list[TaskPlan] | None = None, *,
                         group: ProcessGroup | None = None) -> list[dict[str, Any]]:
    """Generate (or resume) the completions of every task; returns exactly the requested records, in task order.

    A stored record is reused only when its key, data hash, prompt hash and settings hash all match;
    at the end ``completions.jsonl`` holds exactly these records in task order. Under several
    processes (``group``) each one decodes whole batches of the one-process plan, dealt round-robin;
    the main process merges them and returns the records, the others return ``[]``. Batches are
    planned task by task, or with ``config.pool_tasks`` once over the prompts of every task.
    """
    group = group or ProcessGroup()
    plans = plans if plans is not None else plan_tasks(loaded, config)
    settings = settings_hash(loaded, config)
    existing = group.on_main(lambda: prune_completions(run, plans, settings))
    journal = COMPLETIONS if group.is_main else RANK_JOURNAL.format(group.rank)
    owns = group.dealer()
    generated = [0]

    def save(rows: list[tuple[TaskPlan, int]], idx: list[int], texts: list[str]) -> None:
        """Journal the completions of one batch: ``rows[j]`` is the (task, index in task) of batch row ``j``."""
        recs = []
        for j, text in zip(idx, texts):
            plan, i = rows[j]
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
        run.append_jsonl(journal, recs)
        generated[0] += len(recs)

    # one batch plan per task, or (pool_tasks) one over every task's prompts: rows are (plan, index in plan)
    parts = [[(plan, i) for plan in plans for i in range(len(plan.keys))]] if config.pool_tasks else \
        [[(plan, i) for i in range(len(plan.keys))] for plan in plans]
    for rows in parts:
        done = [plan.keys[i] in existing for plan, i in rows]
        if not rows or all(done):
            continue
        first = rows[0][0].task
        generate(
            loaded, [plan.model_prompts[i] for plan, i in rows], response_prefixes=[plan.prefills[i] for plan, i in rows],
            max_new_tokens=config.max_new_tokens, batch_size=config.batch_size, system=config.system,
            desc=f"{len(plans)} sets" if config.pool_tasks else f"{first.dataset} [{first.attack}]",
            on_batch=functools.partial(save, rows), done=done, max_batch_tokens=config.max_batch_tokens, owns=owns,
        )
    by_process = group.gather(generated[0])  # also waits until every process has written its journal
    stored = existing if group.world == 1 else None  # else merged from the folder and the journals
    return group.on_main(lambda: merge_completions(run, plans, settings, stored, by_process), share=False) or []


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


def judged_request(record: dict[str, Any]) -> str:
    """The request a judge reads for a completion record: the prompt without its attack's wrapper,
    or, for an attack with no user prompt (completion), the request it continued."""
    prompt = record.get("prompt") or ""
    if not prompt:
        return record.get("prefill") or ""
    attack = ATTACKS.get(str(record.get("attack", "none")))
    return attack.request_of(prompt) if attack is not None else prompt


def judge_records(records: list[dict[str, Any]], judge: str | Judge) -> list[JudgmentRecord]:
    """Judge every completion; the judge decides, and cannot-judge stays visible as ``unjudged``.

    ``judge`` is a registered judge name or any object following the :class:`mosr.judges.Judge`
    protocol. Attacks that prefill the assistant turn are judged on the model's own text only, and
    judges read the request inside a jailbreak wrapper, not the wrapper (:func:`judged_request`).
    """
    judge_obj = resolve_judge(judge)
    judgments = judge_obj.judge([judged_request(r) for r in records], [r["completion"] for r in records])
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
    metrics["judge_rules"] = rules_fingerprint()  # the version of the built-in judges' rules that judged this run
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
    its ``name`` is recorded. Launched on several processes (docs/EVALUATION.md, "Several processes"),
    they share the generation and the main one writes the folder; every process returns the metrics.
    """
    group = process_group()
    judge = resolve_judge(judge if judge is not None else config.judge)  # fail on an unknown judge before any generation
    if judge.name != config.judge:
        config.judge = judge.name
    tasks = config_tasks(config)
    for t in tasks:
        task_samples(t, config.limit, config)  # fail on a bad dataset before the model loads
    if loaded is None:
        loaded = load_model(config.model, config.adapter, device=group.device)  # fails before anything is written
    plans = plan_tasks(loaded, config)
    from mosr.steering.eval import steering_for_eval  # mosr.steering imports this module

    steering, steering_meta = steering_for_eval(config.steering, loaded)  # refuses a foreign artifact before any write
    out = Path(out)
    check_run_kind(out, "eval")
    if (out / "eval_config.json").is_file():
        check_resumable(RunDir(out, create=False), config)
    fresh, existed = not (out / "run.json").is_file(), out.exists()
    try:
        with contextlib.ExitStack() as held:

            def accept() -> RunDir:
                run = RunDir(out)
                held.enter_context(run.lock("mosr eval"))
                if (out / "eval_config.json").is_file():
                    check_resumable(run, config)  # again, now that no other command can change the folder
                return run

            run = group.on_main(accept, share=False) or RunDir(out, create=False)
            records = _accepted_eval(loaded, config, run, plans, fresh, steering, steering_meta, group)
            return group.on_main(lambda: finish_run(run, judge, records))
    except MosrError:
        if group.is_main and not existed and out.is_dir() and [p.name for p in out.iterdir()] == [LOCK_FILE]:
            (out / LOCK_FILE).unlink()
            out.rmdir()  # a failed first run leaves no folder behind
        raise


def _accepted_eval(
    loaded: LoadedModel, config: EvalConfig, run: RunDir, plans: list[TaskPlan], fresh: bool,
    steering: Any, steering_meta: dict[str, Any] | None, group: ProcessGroup,
) -> list[dict[str, Any]]:
    """Write the metadata (main process), then generate; a failed first run takes its metadata back."""
    settings = settings_hash(loaded, config)

    def write_metadata() -> None:
        run.write_json("eval_config.json", config.generation_key())
        for name in DERIVED:
            (run / name).unlink(missing_ok=True)  # remade below from exactly the requested completions
        run.write_metadata(command="eval", config=asdict(config), seed=config.seed, model=loaded.describe(),
                           data_hashes={p.task.dataset: p.data_hash for p in plans},
                           extra={"expected_completions": sum(len(p.keys) for p in plans),
                                  "truncated_prompts": sum(len(p.truncated) for p in plans), "processes": group.world,
                                  **({"steering": steering_meta} if steering_meta else {})})

    try:
        group.on_main(write_metadata)
        torch.manual_seed(config.seed)
        with steering(loaded):
            records = generate_completions(loaded, config, run, plans, group=group)
        group.on_main(lambda: _update_perplexity(loaded, config, run, plans, settings))
    except MosrError:
        if group.is_main and fresh and not run.read_jsonl(COMPLETIONS):
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
