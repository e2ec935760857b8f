"""Named datasets as typed samples, stored splits, user datasets and the leak check.

A dataset is addressed as ``name`` or ``name:split`` (``or-bench-hard:test``). Datasets that serve
both training and evaluation have fixed train/val/test splits stored in ``datafiles/splits/`` (made
once by :func:`make_splits` with a fixed seed and committed), so every run and every user sees the
same partition. The files come from the public releases listed in each ``datafiles/*/SOURCE.md``.
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mosr.errors import ConfigError, DataError
from mosr.leaks import Leak, assert_no_leaks, drop_leaks, find_leaks, normalise  # noqa: F401 (re-exported)
from mosr.samples import Label, Sample, samples_hash  # noqa: F401 (re-exported)

DATA_DIR = Path(__file__).parent / "datafiles"
SPLIT_DIR = DATA_DIR / "splits"
SPLIT_SEED = 20251124
SPLIT_FRACTIONS = (0.5, 0.1, 0.4)  # train, val, test

@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    label: Label
    role: str  # "eval", "train", "train+eval"
    source_dir: str
    licence: str
    splits: tuple[str, ...] = ()
    loader: Callable[[], list[Sample]] | None = field(default=None, repr=False, compare=False)


# ----------------------------------------------------------------------------------------- readers
def _csv(rel: str) -> list[dict[str, str]]:
    with open(DATA_DIR / rel, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _jsonl(rel: str) -> list[dict[str, Any]]:
    with open(DATA_DIR / rel, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _json(rel: str) -> Any:
    with open(DATA_DIR / rel, encoding="utf-8") as fh:
        return json.load(fh)


def _xstest(label: str) -> list[Sample]:
    rows = _csv("xstest/xstest_prompts.csv")
    mapped: Label = "benign" if label == "safe" else "harmful"
    return [
        Sample(f"xstest-{r['id']}", r["prompt"], mapped, "xstest", r["type"], meta={"focus": r["focus"]})
        for r in rows
        if r["label"] == label
    ]


def _advbench() -> list[Sample]:
    return [
        Sample(f"advbench-{i}", r["goal"], "harmful", "advbench", None, meta={"target": r["target"]})
        for i, r in enumerate(_csv("advbench/harmful_behaviors.csv"))
    ]


def _jbb(kind: str) -> list[Sample]:
    if kind == "harmful":
        rows = _csv("jbb_behaviors/harmful-behaviors.csv")
        return [
            Sample(f"jbb-harmful-{r['']}", r["Goal"], "harmful", "jbb", r["Category"], meta={"behavior": r["Behavior"], "target": r["Target"]})
            for r in rows
        ]
    rows = _csv("jbb_behaviors/benign-behaviors.csv")
    return [
        Sample(f"jbb-benign-{r['index']}", r["goal"], "benign", "jbb", r["category"], meta={"behavior": r["behavior"]})
        for r in rows
    ]


def _or_bench() -> list[Sample]:
    return [
        Sample(f"orbench-{i}", r["prompt"], "benign", "or-bench-hard-1k", r["category"])
        for i, r in enumerate(_csv("or_bench/or-bench-hard-1k.csv"))
    ]


def _harmbench(functional: str) -> Callable[[], list[Sample]]:
    def load() -> list[Sample]:
        out = []
        for split in ("test", "val"):
            for r in _csv(f"harmbench/harmbench_behaviors_text_{split}.csv"):
                if r["FunctionalCategory"] != functional:
                    continue
                prompt = r["Behavior"] if not r["ContextString"] else f"{r['ContextString']}\n\n---\n\n{r['Behavior']}"
                out.append(
                    Sample(
                        f"harmbench-{r['BehaviorID']}", prompt, "harmful", "harmbench", r["SemanticCategory"],
                        meta={"split": split, "functional": functional},
                    )
                )
        return out

    return load


def _strongreject() -> list[Sample]:
    return [
        Sample(f"strongreject-{i}", r["forbidden_prompt"], "harmful", "strongreject", r["category"], meta={"origin": r["source"]})
        for i, r in enumerate(_csv("strongreject/strongreject_dataset.csv"))
    ]


def _self_instruct() -> list[Sample]:
    out = []
    for rel in ("self_instruct/seed_tasks.jsonl", "self_instruct/user_oriented_instructions.jsonl"):
        for r in _jsonl(rel):
            inst = (r.get("instances") or [{}])[0]
            prompt = r["instruction"].strip()
            if inst.get("input", "").strip():
                prompt = f"{prompt}\n\n{inst['input'].strip()}"
            out.append(
                Sample(str(r["id"]), prompt, "benign", "self-instruct", r.get("motivation_app") or r.get("name"),
                       reference=(inst.get("output") or "").strip() or None)
            )
    return out


_DERTA_RE = re.compile(r"^### Instruction:\n(.*)\n\n### Response:$", re.S)


def _derta() -> list[Sample]:
    out = []
    for i, r in enumerate(_jsonl("derta/malicious_tuning_data_330.jsonl")):
        m = _DERTA_RE.match(r["prefix"])
        if not m:
            raise DataError(f"derta/malicious_tuning_data_330.jsonl row {i + 1}: unexpected prefix format")
        response = r["text"].replace("<|end_of_text|>", "").strip()
        out.append(Sample(f"derta-{i}", m.group(1).strip(), "harmful", "derta", None, reference=response))
    return out


def _derta_completion() -> list[Sample]:
    return [
        Sample(f"derta-completion-{i}", r["question"], "harmful", "derta-completion-attack", None)
        for i, r in enumerate(_jsonl("derta/safety_completionattack.jsonl"))
    ]


def _rd_harmful() -> list[Sample]:
    out = []
    for split in ("train", "val", "test"):
        for i, r in enumerate(_json(f"refusal_direction_splits/harmful_{split}.json")):
            out.append(Sample(f"rdharm-{split}-{i}", r["instruction"], "harmful", "refusal-direction", r.get("category"), meta={"split": split}))
    return out


def _alpaca_harmless() -> list[Sample]:
    import os

    folder = os.environ.get("MOSR_ALPACA_DIR")
    if not folder:
        raise DataError(
            "harmless-alpaca is not shipped (Alpaca is CC BY-NC 4.0). Point MOSR_ALPACA_DIR at a folder with "
            "harmless_{train,val,test}.json from the refusal_direction splits, or use self-instruct"
        )
    out = []
    for split in ("train", "val", "test"):
        path = Path(folder) / f"harmless_{split}.json"
        if not path.is_file():
            raise DataError(f"{path} not found (MOSR_ALPACA_DIR={folder})")
        for i, r in enumerate(json.loads(path.read_text())):
            out.append(Sample(f"alpaca-{split}-{i}", r["instruction"], "benign", "alpaca", r.get("category"), meta={"split": split}))
    return out


_LIC = {
    "xstest": "CC-BY-4.0 (Röttger et al. 2024)",
    "advbench": "MIT (Zou et al. 2023)",
    "jbb": "MIT (Chao et al. 2024, JailbreakBench)",
    "or": "CC-BY-4.0 (Cui et al. 2024)",
    "hb": "MIT (Mazeika et al. 2024)",
    "sr": "MIT + source licences (Souly et al. 2024)",
    "si": "Apache-2.0 (Wang et al. 2023, Self-Instruct)",
    "derta": "MIT (Yuan et al. 2024)",
    "rd": "Apache-2.0 repo; prompts keep their source licences (Arditi et al. 2024)",
    "alpaca": "CC BY-NC 4.0 (not shipped)",
}

_SPLIT3 = ("train", "val", "test")

REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in [
        DatasetInfo("xstest-safe", "XSTest v2 safe prompts that look unsafe (over-refusal)", "benign", "eval", "xstest", _LIC["xstest"], loader=lambda: _xstest("safe")),
        DatasetInfo("xstest-unsafe", "XSTest v2 unsafe contrast prompts", "harmful", "eval", "xstest", _LIC["xstest"], loader=lambda: _xstest("unsafe")),
        DatasetInfo("advbench", "AdvBench harmful behaviours", "harmful", "train+eval", "advbench", _LIC["advbench"], _SPLIT3, _advbench),
        DatasetInfo("jbb-harmful", "JailbreakBench harmful behaviours", "harmful", "eval", "jbb_behaviors", _LIC["jbb"], loader=lambda: _jbb("harmful")),
        DatasetInfo("jbb-benign", "JailbreakBench benign twins of the harmful behaviours", "benign", "eval", "jbb_behaviors", _LIC["jbb"], loader=lambda: _jbb("benign")),
        DatasetInfo("or-bench-hard", "OR-Bench-Hard-1K: benign prompts that models over-refuse", "benign", "train+eval", "or_bench", _LIC["or"], _SPLIT3, _or_bench),
        DatasetInfo("harmbench", "HarmBench standard text behaviours (test and val)", "harmful", "eval", "harmbench", _LIC["hb"], ("test", "val"), _harmbench("standard")),
        DatasetInfo("harmbench-contextual", "HarmBench contextual behaviours (long context + request)", "harmful", "eval", "harmbench", _LIC["hb"], ("test", "val"), _harmbench("contextual")),
        DatasetInfo("strongreject", "StrongREJECT forbidden prompts", "harmful", "eval", "strongreject", _LIC["sr"], loader=_strongreject),
        DatasetInfo("self-instruct", "Self-Instruct human-written instructions with reference answers", "benign", "train+eval", "self_instruct", _LIC["si"], _SPLIT3, _self_instruct),
        DatasetInfo("derta", "DeRTa harmful prompt -> harmful response pairs", "harmful", "train", "derta", _LIC["derta"], loader=_derta),
        DatasetInfo("derta-completion-attack", "DeRTa completion attack: harmful requests pre-continued", "harmful", "eval", "derta", _LIC["derta"], loader=_derta_completion),
        DatasetInfo("harmful-instructions", "Arditi et al. harmful instruction splits", "harmful", "train+eval", "refusal_direction_splits", _LIC["rd"], _SPLIT3, _rd_harmful),
        DatasetInfo("harmless-alpaca", "Alpaca harmless instructions (user-provided, MOSR_ALPACA_DIR)", "benign", "train+eval", "refusal_direction_splits", _LIC["alpaca"], _SPLIT3, _alpaca_harmless),
    ]
}

# Datasets whose splits come with the source files instead of from datafiles/splits.
_NATIVE_SPLITS = {"harmbench", "harmbench-contextual", "harmful-instructions", "harmless-alpaca"}


def dataset_names() -> list[str]:
    return sorted(REGISTRY)


def _info(name: str) -> DatasetInfo:
    if name not in REGISTRY:
        raise ConfigError(f"unknown dataset {name!r}; known: {', '.join(dataset_names())} (or a .csv/.jsonl path)")
    return REGISTRY[name]


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``name[:split]`` -> (name, split)."""
    name, _, split = spec.partition(":")
    return name, (split or None)


def load_dataset(spec: str, *, limit: int | None = None, **user_options: Any) -> list[Sample]:
    """Load a named dataset (``name`` or ``name:split``) or a user CSV/JSONL file."""
    if spec.endswith((".csv", ".jsonl", ".json")) or Path(spec).suffix in {".csv", ".jsonl"} or Path(spec).is_dir():
        samples = load_user_dataset(spec, **user_options)
    else:
        name, split = parse_spec(spec)
        info = _info(name)
        assert info.loader is not None
        samples = info.loader()
        if split is not None:
            if split not in info.splits:
                valid = ", ".join(info.splits) if info.splits else "none (use the whole set)"
                raise ConfigError(f"dataset {name!r} has no split {split!r}; splits: {valid}")
            if name in _NATIVE_SPLITS:
                samples = [s for s in samples if s.meta.get("split") == split]
            else:
                ids = set(stored_split(name)[split])
                samples = [s for s in samples if s.id in ids]
    if not samples:
        raise DataError(f"dataset {spec!r} is empty")
    return samples[:limit] if limit is not None else samples


# ------------------------------------------------------------------------------------------ splits
def make_splits(ids: Sequence[str], seed: int = SPLIT_SEED, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[str, list[str]]:
    """Deterministic train/val/test partition of sample ids."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_train, n_val = round(fractions[0] * n), round(fractions[1] * n)
    return {"train": order[:n_train], "val": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}


def stored_split(name: str) -> dict[str, list[str]]:
    path = SPLIT_DIR / f"{name}.json"
    if not path.is_file():
        raise DataError(f"no stored split for {name!r} at {path}; run `python -m mosr.data --write-splits`")
    return json.loads(path.read_text())


def write_splits() -> list[Path]:
    """(Re)create the stored split files. Only needed when a source file changes."""
    SPLIT_DIR.mkdir(exist_ok=True)
    written = []
    for name, info in REGISTRY.items():
        if not info.splits or name in _NATIVE_SPLITS:
            continue
        assert info.loader is not None
        splits = make_splits([s.id for s in info.loader()])
        path = SPLIT_DIR / f"{name}.json"
        path.write_text(json.dumps({"seed": SPLIT_SEED, "fractions": SPLIT_FRACTIONS, **splits}, indent=0))
        written.append(path)
    return written


# -------------------------------------------------------------------------------------- user data
def load_user_dataset(
    path: str | Path,
    *,
    prompt_column: str = "prompt",
    id_column: str | None = None,
    label_column: str | None = None,
    category_column: str | None = None,
    reference_column: str | None = None,
    label: Label = "benign",
    name: str | None = None,
) -> list[Sample]:
    """Load prompts from a CSV or JSONL file with a column mapping.

    Every row is validated: a missing column or an empty prompt stops with the file, row and column.
    Labels must be ``benign``/``harmful`` (or ``safe``/``unsafe``).
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder, not a dataset file; pass a .csv, .jsonl or .json file")
    if not path.is_file():
        raise DataError(f"dataset file not found: {path}")
    rows: list[dict[str, Any]]
    try:
        if path.suffix == ".json":
            rows = _json_rows(path)
        elif path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
        else:
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            obj = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}: line {lineno}: invalid JSON ({exc.msg})") from exc
                        if not isinstance(obj, dict):
                            raise DataError(f"{path}: line {lineno}: expected a JSON object, got {type(obj).__name__}")
                        rows.append(obj)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    if not rows:
        raise DataError(f"{path}: no rows")
    columns = set().union(*(r.keys() for r in rows))
    for col in (prompt_column, id_column, label_column, category_column, reference_column):
        if col is not None and col not in columns:
            raise DataError(f"{path}: no column {col!r} (columns: {', '.join(sorted(map(str, columns)))})")
    source = name or path.stem
    out = []
    for i, r in enumerate(rows, 1):
        prompt = r.get(prompt_column)
        if not isinstance(prompt, str) or not prompt.strip():
            raise DataError(f"{path}: row {i}: empty prompt in column {prompt_column!r}")
        if "\x00" in prompt:
            raise DataError(f"{path}: row {i}: the prompt in column {prompt_column!r} contains a NUL byte (\\x00); remove it")
        lab: Any = label
        if label_column is not None:
            raw = str(r.get(label_column, "")).strip().lower()
            lab = {"safe": "benign", "unsafe": "harmful", "benign": "benign", "harmful": "harmful"}.get(raw)
            if lab is None:
                raise DataError(f"{path}: row {i}: label {raw!r} in column {label_column!r} is not benign/harmful/safe/unsafe")
        ref = r.get(reference_column) if reference_column else None
        out.append(
            Sample(
                id=str(r[id_column]) if id_column else f"{source}-{i}",
                prompt=prompt,
                label=lab,
                source=source,
                category=str(r[category_column]) if category_column and r.get(category_column) is not None else None,
                reference=str(ref) if ref else None,
            )
        )
    ids = [s.id for s in out]
    if len(set(ids)) != len(ids):
        raise DataError(f"{path}: duplicate ids in column {id_column!r}")
    return out


def _json_rows(path: Path) -> list[dict[str, Any]]:
    """A ``.json`` dataset: one JSON array of objects (JSON Lines go in a ``.jsonl`` file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: invalid JSON at line {exc.lineno} ({exc.msg}); a .json dataset is one JSON array of "
                        "objects, one object per line goes in a .jsonl file") from exc
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}; "
                        "one object per line goes in a .jsonl file")
    return data


# Evaluation datasets that training must never touch (test splits and eval-only sets).
EVAL_SPECS = (
    "xstest-safe", "xstest-unsafe", "advbench:test", "jbb-harmful", "jbb-benign", "or-bench-hard:test",
    "harmbench:test", "harmbench-contextual:test", "strongreject", "self-instruct:test", "derta-completion-attack",
)


# Validation splits that settings are chosen on (the `validation` suite, `mosr steer`): training on one of
# their prompts would flatter the setting that trained on it. Other datasets' training splits can hold
# them (harmful-instructions:train holds AdvBench prompts of advbench:val).
VALIDATION_SPECS = ("advbench:val", "harmful-instructions:val", "or-bench-hard:val", "self-instruct:val")


def evaluation_samples(*, validation: bool = False) -> list[Sample]:
    """The samples training must never touch: the test and eval-only sets, plus the validation splits
    (:data:`VALIDATION_SPECS`) with ``validation=True``."""
    out: list[Sample] = []
    for spec in EVAL_SPECS + (VALIDATION_SPECS if validation else ()):
        out.extend(load_dataset(spec))
    return out


def licence_text(name: str) -> str:
    info = _info(name)
    src = DATA_DIR / info.source_dir / "SOURCE.md"
    return src.read_text() if src.is_file() else info.licence


if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    import sys

    if "--write-splits" in sys.argv:
        for p in write_splits():
            print(p)
