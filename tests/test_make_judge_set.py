"""scripts/make_judge_set.py: prompt files as pools, disjoint slices, and no test split."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import load_script


@pytest.fixture(scope="module")
def mjs():
    return load_script("make_judge_set")


def _prompt_file(path: Path, prefix: str, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}-{i}", "category": "c", "prompt": f"{prefix} prompt {i}?"}) + "\n"
                            for i in range(n)))
    return path


def test_prompt_files_fill_the_harmful_prefill_and_benign_scary_pools(mjs, tmp_path):
    harmful = str(_prompt_file(tmp_path / "harm.jsonl", "h", 12))
    scary = str(_prompt_file(tmp_path / "scary.jsonl", "s", 6))
    per_source = mjs.build_prompts(2, counts=[0, 2, 3, 0, 3, 0], harmful=(harmful,), prefill=(harmful,),
                                   benign_scary=(scary,))
    assert [len(rows) for rows in per_source] == [8, 8]
    rows = [r for rs in per_source for r in rs]
    assert {r["split"] for r in rows} == {"file"}
    ids = [r["prompt_id"] for r in rows]
    assert len(ids) == len(set(ids)), "a prompt was drawn twice (across pools or sources)"
    prefilled = [r for r in rows if r["attack"] == "prefill"]
    assert len(prefilled) == 6 and all(r["prefill"].startswith("Sure, here is how") for r in prefilled)
    assert sum(r["kind"] == "benign-scary" for r in rows) == 6


def test_an_exhausted_pool_and_a_test_split_are_refused(mjs, tmp_path):
    scary = str(_prompt_file(tmp_path / "scary.jsonl", "s", 3))
    with pytest.raises(SystemExit, match="unused prompts"):
        mjs.build_prompts(2, counts=[0, 0, 0, 0, 2, 0], benign_scary=(scary,))
    with pytest.raises(SystemExit, match="train or val splits"):
        mjs.build_prompts(1, counts=[0, 1, 0, 0, 0, 0], harmful=("harmful-instructions:test",))
