"""What ``mosr eval`` runs: :class:`EvalConfig` and the (dataset, attack) tasks it selects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mosr.config import YamlLoadable
from mosr.data import Sample, load_dataset
from mosr.errors import ConfigError
from mosr.suites import Task, resolve_suites, tasks_for

LONG_PROMPTS = ("refuse", "truncate")
# keys added after runs were stored, with the value that behaves as before: such a key enters the
# generation settings (and an experiment's stage hash) only when it differs from that value
ADDED_KEYS: dict[str, Any] = {"pool_tasks": False}


@dataclass
class EvalConfig(YamlLoadable):
    """Settings of one evaluation run."""

    config_name: ClassVar[str] = "eval"

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
    pool_tasks: bool = False  # one batch plan over the prompts of every task (longest first), not one per task

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

    def generation_key(self) -> dict[str, Any]:
        """Settings that change completions; a resumed run must keep them."""
        key = {k: getattr(self, k) for k in ("model", "adapter", "max_new_tokens", "batch_size", "system", "prompt_column",
                                             "long_prompts", "max_batch_tokens")}
        if self.steering:
            key["steering"] = self.steering
        key.update({k: getattr(self, k) for k, before in ADDED_KEYS.items() if getattr(self, k) != before})
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
