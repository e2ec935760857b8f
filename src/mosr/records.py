"""The records of an eval run folder, typed: completions, judgments, perplexity, metrics and run metadata.

Every reader and writer of ``completions.jsonl``, ``judgments.jsonl``, ``perplexity.jsonl``,
``metrics.json`` and ``run.json`` goes through this module, so the file formats are written down
once. The files stay plain JSON(L): a record's :meth:`to_dict` gives exactly the keys on disk.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from mosr.errors import DataError
from mosr.runs import RunDir, iter_jsonl

COMPLETIONS = "completions.jsonl"
JUDGMENTS = "judgments.jsonl"
PERPLEXITY = "perplexity.jsonl"
METRICS = "metrics.json"
RUN_META = "run.json"


@dataclass(frozen=True)
class Completion:
    """One generated answer of an eval run, with the hashes that decide whether a rerun may reuse it."""

    key: str  # dataset|attack|sample_id
    suite: str
    dataset: str
    attack: str
    sample_id: str
    prompt: str  # the user's prompt (the attack applied)
    completion: str  # the model's own text, after any prefill
    label: str | None = None
    category: str | None = None
    prefill: str = ""
    data_hash: str = ""
    prompt_hash: str = ""
    settings_hash: str = ""
    truncated: int | None = None  # tokens cut from the middle of a long prompt
    model_prompt: str | None = None  # the prompt the model saw, when it was cut

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Completion:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("key", "suite", "dataset", "attack", "sample_id", "label", "category", "prompt",
                                             "prefill", "completion", "data_hash", "prompt_hash", "settings_hash")}
        if self.truncated is not None:
            out["truncated"] = self.truncated
            out["model_prompt"] = self.model_prompt
        return out


@dataclass(frozen=True)
class JudgmentRecord:
    """The verdict on one completion, and the harm view of the same answer."""

    dataset: str
    attack: str
    verdict: str
    suite: str = ""
    key: str = ""
    sample_id: str = ""
    category: str | None = None
    judge: str = ""
    explanation: str = ""
    score: float | None = None
    harmful: bool | None = None
    harm_explanation: str | None = None
    harm_score: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JudgmentRecord:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("key", "suite", "dataset", "attack", "sample_id", "category", "verdict", "judge",
                                              "explanation", "score", "harmful", "harm_explanation", "harm_score")}


def as_judgment(record: JudgmentRecord | Mapping[str, Any]) -> JudgmentRecord:
    return record if isinstance(record, JudgmentRecord) else JudgmentRecord.from_dict(record)


@dataclass(frozen=True)
class PerplexityRecord:
    """Token NLL of one reference answer (capability suite)."""

    sample_id: str
    tokens: int
    nll_sum: float
    extra: dict[str, Any] = field(default_factory=dict)  # bookkeeping kept on disk (request hash)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PerplexityRecord:
        extra = {k: v for k, v in data.items() if k not in ("sample_id", "tokens", "nll_sum")}
        return cls(str(data["sample_id"]), int(data["tokens"]), float(data["nll_sum"]), extra)

    def to_dict(self) -> dict[str, Any]:
        return {"sample_id": self.sample_id, "tokens": self.tokens, "nll_sum": self.nll_sum, **self.extra}


@dataclass(frozen=True)
class RunMeta:
    """What ``run.json`` says about a run: the command, its config, the seed and the model."""

    command: str | None
    config: dict[str, Any]
    seed: int
    model_spec: str | None
    raw: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Any) -> RunMeta:
        data = data if isinstance(data, dict) else {}
        seed = data.get("seed", 0)
        model = data.get("model")
        spec = model.get("spec") if isinstance(model, dict) else None
        config = data.get("config")
        return cls(command=data.get("command") if isinstance(data.get("command"), str) else None,
                   config=config if isinstance(config, dict) else {},
                   seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else 0,
                   model_spec=spec if isinstance(spec, str) else None, raw=data)


def read_run_meta(folder: str | Path) -> RunMeta:
    """The run's metadata; an empty one (seed 0) when ``run.json`` is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / RUN_META).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    return RunMeta.from_dict(data)


# ------------------------------------------------------------------------------------- reading
def read_judgments(folder: str | Path, *, need: Sequence[str] = (), hint: str = "") -> list[JudgmentRecord]:
    """The judgments of an eval run; a missing file, or a record without a key of ``need``, is a :class:`DataError`."""
    path = Path(folder) / JUDGMENTS
    if not path.is_file():
        raise DataError(f"{path} not found" + (f"; {hint}" if hint else ""))
    out = []
    for i, rec in enumerate(iter_jsonl(path), 1):
        missing = [k for k in need if k not in rec]
        if missing:
            raise DataError(f"{path}: record {i} lacks {', '.join(missing)}")
        out.append(JudgmentRecord.from_dict(rec))
    return out


def read_completions(folder: str | Path) -> list[Completion]:
    return [Completion.from_dict(r) for r in iter_jsonl(Path(folder) / COMPLETIONS)]


def read_perplexity(folder: str | Path) -> list[PerplexityRecord]:
    return [PerplexityRecord.from_dict(r) for r in iter_jsonl(Path(folder) / PERPLEXITY)]


def read_metrics(folder: str | Path) -> dict[str, Any]:
    return RunDir(folder, create=False).read_json(METRICS)


# ------------------------------------------------------------------------------------- writing
def write_judgments(run: RunDir, records: Iterable[JudgmentRecord]) -> Path:
    return run.write_text(JUDGMENTS, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in records))


def write_jsonl(run: RunDir, name: str, records: Iterable[Mapping[str, Any]], *, ensure_ascii: bool = False) -> Path:
    """Replace ``name`` with ``records`` (atomically), one JSON object a line."""
    return run.write_text(name, "".join(json.dumps(dict(r), ensure_ascii=ensure_ascii) + "\n" for r in records))


# ------------------------------------------------------------------------------------- metrics
def eval_rates(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat ``metric id -> rate dict`` of one eval run's metrics (ids: safety, asr:ATTACK, over_refusal, or:SET, ...)."""
    out: dict[str, dict[str, Any]] = {}
    s = metrics.get("suites", {})
    if "safety" in s:
        if s["safety"].get("safety"):
            out["safety"] = s["safety"]["safety"]
        if s["safety"].get("direct"):
            out["gibberish_harmful"] = s["safety"]["direct"]["gibberish"]
        for attack, rate in s["safety"].get("attack_success", {}).items():
            out[f"asr:{attack}"] = rate
    if "over-refusal" in s:
        out["over_refusal"] = s["over-refusal"]["over_refusal"]
    if "capability" in s:
        out["capability"] = s["capability"]["compliance"]
        out["gibberish_benign"] = s["capability"]["gibberish"]
    for task in metrics.get("tasks", {}).values():
        if task["suite"] == "over-refusal" and task["attack"] == "none":
            out[f"or:{task['dataset']}"] = task["not_complied"]
        elif task["suite"] == "custom":
            out[f"custom:{task['dataset']}" + ("" if task["attack"] == "none" else f" [{task['attack']}]")] = task["not_complied"]
    return out


def reference_perplexity(metrics: Mapping[str, Any]) -> float | None:
    cap = metrics.get("suites", {}).get("capability", {})
    return cap.get("reference_perplexity", {}).get("perplexity")
