"""Generate the completions of the judge labelling set (docs/LABELLING.md, docs/JUDGES.md).

Each source model (the undefended default model and its adapters) answers its own slice of prompts
drawn from **train and validation splits only**: harmful requests (plain, under the prefill attack
and under the completion attack), benign-but-scary requests and ordinary instructions. Slices are
disjoint across source models, so no prompt is answered twice. Every prompt id is assigned to
``judge-train`` or ``judge-test`` by a hash of the id, so rules and models written on judge-train
never see a judge-test prompt.

    python scripts/make_judge_set.py --source undefended= --source rr=runs/train-rr \\
        --source mosr=runs/train-mosr --source refusal-sft=runs/train-refusal-sft \\
        --source derta=runs/train-derta --out results/judge_set/completions.jsonl

Rerunning appends only the source models that are missing from ``--out``.

A second, fresh test set (prompts no rule or model has seen, for measuring a judge changed after the
first judge-test was scored) draws only prompts absent from earlier sets and tags every row with one
split name:

    python scripts/make_judge_set.py --source undefended= --source rr=runs/train-rr ... \
        --exclude results/judge_set/completions.jsonl --counts 5,6,5,5,17,12 --split judge-test-2 \
        --out results/judge_set/completions_test2.jsonl

Round 4 drew its ordinary instructions from the Alpaca instructions of the refusal-direction splits
(CC BY-NC 4.0; ``MOSR_ALPACA_DIR``), because every self-instruct train/val prompt but two was used:

    MOSR_ALPACA_DIR=../shared/data/refusal_direction_splits python scripts/make_judge_set.py ... \
        --exclude ... --counts 6,12,8,8,32,14 --split judge-test-4 \
        --ordinary harmless-alpaca:train,harmless-alpaca:val --out results/judge_set/completions_test4.jsonl

Round 5 also took its prefill-attack prompts from harmful-instructions (advbench:train was used up):
``--counts 4,12,6,10,32,16 --prefill harmful-instructions:train,harmful-instructions:val``.

Round 6 found the train/val pools nearly used up (2 advbench, 9 harmful-instructions, 44 DeRTa and
67 OR-Bench prompts left), so it is smaller, has no prefill rows, and takes its plain harmful requests
from HarmBench's validation split as well: ``--counts 0,10,0,8,13,16 --harmful
harmbench:val,harmful-instructions:train,harmful-instructions:val``.

Rounds 7 and 8 found them used up and take prompt files that are in no training or evaluation set
(``.jsonl`` with ``id``, ``prompt`` and ``category``; ``split`` is recorded as ``file``):
``--counts 0,14,8,0,14,14 --harmful results/judge_set/prompts_test7/do_not_answer.jsonl --prefill
results/judge_set/prompts_test7/do_not_answer.jsonl --benign-scary
results/judge_set/prompts_test7/benign_scary.jsonl``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

from mosr.data import Sample, load_dataset
from mosr.generation import generate
from mosr.models import load_model

# (pool name, dataset specs, attack, per-source count). Specs are train/val splits or train-only sets.
POOLS: tuple[tuple[str, tuple[str, ...], str, int], ...] = (
    ("harmful", ("advbench:train", "advbench:val"), "none", 12),
    ("harmful", ("harmful-instructions:train", "harmful-instructions:val"), "none", 16),
    ("harmful", ("advbench:train",), "prefill", 14),
    ("harmful", ("derta",), "completion", 14),
    ("benign-scary", ("or-bench-hard:train", "or-bench-hard:val"), "none", 44),
    ("ordinary", ("self-instruct:train", "self-instruct:val"), "none", 30),
)
TEST_SHARE = 0.4


def judge_split(prompt_id: str) -> str:
    """judge-test for a fixed 40% of prompt ids (by SHA-256), judge-train for the rest."""
    h = int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "judge-test" if h < TEST_SHARE else "judge-train"


def _completion_attack(sample: Sample) -> tuple[str, str]:
    """The completion attack on a train-split harmful request: the assistant turn already complies.

    Built like the evaluation's ``derta-completion-attack`` rows (request restated as a compliant
    opening, then the start of the harmful answer), from DeRTa's training responses.
    """
    words = re.findall(r"\S+", sample.reference or "")
    return "", " ".join(words[:24])


def _is_prompt_file(spec: str) -> bool:
    return spec.endswith(".jsonl")


def _split_of(spec: str) -> str:
    """A dataset spec's split; ``file`` for a prompt file, which belongs to no evaluation set."""
    return "file" if _is_prompt_file(spec) else (spec.partition(":")[2] or "train")


def _load(spec: str) -> list[Sample]:
    """A dataset spec, or a JSONL prompt file with ``id``, ``prompt`` and ``category`` fields."""
    if _is_prompt_file(spec):
        return load_dataset(spec, id_column="id", category_column="category")
    return load_dataset(spec)


def build_prompts(n_sources: int, *, exclude: set[str] | None = None, counts: list[int] | None = None,
                  ordinary: tuple[str, ...] | None = None, prefill: tuple[str, ...] | None = None,
                  harmful: tuple[str, ...] | None = None, benign_scary: tuple[str, ...] | None = None) -> list[list[dict]]:
    """Per source model, its list of prompt records; slices are disjoint across sources.

    ``exclude``: prompt ids never to draw (an earlier set's); ``counts``: per-source count of each pool;
    ``ordinary`` / ``prefill`` / ``harmful`` / ``benign_scary``: other dataset specs for the
    ordinary-instruction pool, the prefill-attack pool, the second plain harmful pool or the
    benign-but-scary pool: train/val splits, or ``.jsonl`` prompt files that are in no evaluation set.
    """
    per_source: list[list[dict]] = [[] for _ in range(n_sources)]
    used: set[str] = set(exclude or ())
    pools = POOLS if counts is None else tuple((k, sp, a, c) for (k, sp, a, _), c in zip(POOLS, counts, strict=True))
    overrides = (("--ordinary", ordinary, 5), ("--prefill", prefill, 2), ("--harmful", harmful, 1),
                 ("--benign-scary", benign_scary, 4))
    for option, specs_for, index in overrides:
        if not specs_for:
            continue
        if any(not _is_prompt_file(spec) and spec.partition(":")[2] not in ("train", "val") for spec in specs_for):
            raise SystemExit(f"{option} takes train or val splits or prompt files only, got {', '.join(specs_for)}")
        pools = tuple((k, specs_for if i == index else sp, a, c) for i, (k, sp, a, c) in enumerate(pools))
    for kind, specs, attack, count in pools:
        if count == 0:
            continue
        tagged = [(_split_of(spec), s) for spec in specs for s in _load(spec)]
        # a hash order mixes train and val in every slice, and is stable
        tagged = sorted(tagged, key=lambda t: hashlib.sha256(f"{attack}|{t[1].id}".encode()).hexdigest())
        samples = [t for t in tagged if t[1].id not in used]
        need = count * n_sources
        if len(samples) < need:
            raise SystemExit(f"pool {specs} has {len(samples)} unused prompts, {need} needed")
        for k in range(n_sources):
            for split, s in samples[k * count : (k + 1) * count]:
                used.add(s.id)
                if attack == "none":
                    prompt, prefill = s.prompt, ""
                elif attack == "prefill":
                    prompt, prefill = s.prompt, f"{s.meta.get('target') or 'Sure, here is how to do that'}:\n\n"
                else:
                    prompt, prefill = _completion_attack(s)
                per_source[k].append({
                    "prompt_id": s.id, "kind": kind, "dataset": s.source, "split": split, "attack": attack,
                    "request": s.prompt, "prompt": prompt, "prefill": prefill,
                })
    return per_source


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", action="append", required=True, help="NAME=ADAPTER_DIR (empty: the undefended model)")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--exclude", type=Path, action="append", default=[], help="completions.jsonl whose prompt ids are not drawn again")
    ap.add_argument("--counts", default=None, help=f"comma list: per-source count of each of the {len(POOLS)} pools")
    ap.add_argument("--split", default=None, help="tag every row with this split instead of the judge-train/judge-test hash")
    ap.add_argument("--ordinary", default=None, help="comma list of train/val dataset specs for the ordinary pool instead of "
                                                      "self-instruct (e.g. harmless-alpaca:train,harmless-alpaca:val)")
    ap.add_argument("--prefill", default=None, help="comma list of train/val harmful dataset specs for the prefill-attack pool "
                                                     "instead of advbench:train")
    ap.add_argument("--harmful", default=None, help="comma list of train/val harmful dataset specs for the second plain harmful "
                                                     "pool instead of harmful-instructions")
    ap.add_argument("--benign-scary", default=None, help="comma list of train/val benign dataset specs or .jsonl prompt "
                                                          "files for the benign-but-scary pool instead of or-bench-hard")
    args = ap.parse_args()
    sources = [tuple(s.split("=", 1)) for s in args.source]
    exclude = {json.loads(line)["prompt_id"] for f in args.exclude for line in f.read_text().splitlines() if line.strip()}
    counts = [int(c) for c in args.counts.split(",")] if args.counts else None
    if counts is not None and len(counts) != len(POOLS):
        raise SystemExit(f"--counts needs {len(POOLS)} numbers, got {len(counts)}")
    ordinary = tuple(args.ordinary.split(",")) if args.ordinary else None
    prefill = tuple(args.prefill.split(",")) if args.prefill else None
    harmful = tuple(args.harmful.split(",")) if args.harmful else None
    benign_scary = tuple(args.benign_scary.split(",")) if args.benign_scary else None
    prompts = build_prompts(len(sources), exclude=exclude, counts=counts, ordinary=ordinary, prefill=prefill,
                            harmful=harmful, benign_scary=benign_scary)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.is_file():
        done = {json.loads(line)["source"] for line in args.out.read_text().splitlines() if line.strip()}
    for (name, adapter), rows in zip(sources, prompts):
        if name in done:
            print(f"{name}: already in {args.out}")
            continue
        loaded = load_model(args.model, adapter or None)
        texts = generate(
            loaded, [r["prompt"] for r in rows], response_prefixes=[r["prefill"] for r in rows],
            max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, desc=name,
        )
        with args.out.open("a", encoding="utf-8") as fh:
            for r, text in zip(rows, texts):
                rec = {"id": f"{name}|{r['attack']}|{r['prompt_id']}", "source": name, **r, "completion": text,
                       "judge_split": args.split or judge_split(r["prompt_id"]), "max_new_tokens": args.max_new_tokens}
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"{name}: {len(rows)} completions")


if __name__ == "__main__":
    main()
