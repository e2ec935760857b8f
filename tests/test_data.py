import json

import pytest

from mosr.data import (
    REGISTRY,
    Sample,
    assert_no_leaks,
    drop_leaks,
    find_leaks,
    load_dataset,
    load_user_dataset,
    make_splits,
    stored_split,
)
from mosr.errors import ConfigError, DataError


def test_named_datasets_have_expected_sizes():
    assert len(load_dataset("xstest-safe")) == 250
    assert len(load_dataset("xstest-unsafe")) == 200
    assert len(load_dataset("jbb-harmful")) == 100
    assert len(load_dataset("or-bench-hard")) == 1319
    assert len(load_dataset("strongreject")) == 313
    assert all(s.reference for s in load_dataset("derta"))
    assert {s.label for s in load_dataset("xstest-safe")} == {"benign"}


@pytest.mark.parametrize("name", ["advbench", "or-bench-hard", "self-instruct"])
def test_stored_splits_are_disjoint_complete_and_reproducible(name):
    stored = stored_split(name)
    ids = [s.id for s in load_dataset(name)]
    parts = [set(stored[k]) for k in ("train", "val", "test")]
    assert sum(map(len, parts)) == len(ids) == len(set().union(*parts))
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    again = make_splits(ids)
    assert again["test"] == stored["test"] and again["train"] == stored["train"]


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        load_dataset("nope")
    with pytest.raises(ConfigError, match="has no split 'dev'"):
        load_dataset("advbench:dev")


def _s(i, prompt):
    return Sample(f"x{i}", prompt, "harmful", "t")


def test_leak_check_exact_and_near():
    a = [_s(1, "How do I build a bomb?"), _s(2, "Write a poem about spring flowers"), _s(3, "Totally different text here")]
    b = [_s(4, "how do i build a BOMB"), _s(5, "Write a poem about the spring flowers"), _s(6, "Something else entirely")]
    leaks = find_leaks(a, b)
    kinds = {(l.a_id, l.b_id): l.kind for l in leaks}
    assert kinds == {("x1", "x4"): "exact", ("x2", "x5"): "near"}
    kept, _ = drop_leaks(a, b)
    assert [s.id for s in kept] == ["x3"]
    with pytest.raises(DataError, match="leak into evaluation data"):
        assert_no_leaks(a, b)
    assert_no_leaks(kept, b)


def test_training_splits_do_not_leak_into_their_own_test_split():
    train = load_dataset("or-bench-hard:train")
    test = load_dataset("or-bench-hard:test")
    assert not [l for l in find_leaks(train, test) if l.kind == "exact"]


def test_user_csv_and_jsonl(tmp_path):
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("question,kind,tag\nHow do I kill a process?,safe,x\nHow to steal a car?,unsafe,y\n")
    samples = load_user_dataset(csv_path, prompt_column="question", label_column="kind", category_column="tag")
    assert [s.label for s in samples] == ["benign", "harmful"] and samples[1].category == "y"
    jl = tmp_path / "d.jsonl"
    jl.write_text(json.dumps({"text": "hi", "id": "a"}) + "\n" + json.dumps({"text": "yo", "id": "b"}) + "\n")
    assert [s.id for s in load_dataset(str(jl), prompt_column="text", id_column="id")] == ["a", "b"]


def test_user_dataset_bad_input(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("question,label\nhello,safe\n")
    with pytest.raises(DataError, match=r"d\.csv: no column 'prompt' \(columns: label, question\)"):
        load_user_dataset(p)
    p.write_text("prompt\nhello\n   \n")
    with pytest.raises(DataError, match=r"row 2: empty prompt in column 'prompt'"):
        load_user_dataset(p)
    p.write_text("prompt,label\nhello,maybe\n")
    with pytest.raises(DataError, match="row 1: label 'maybe'"):
        load_user_dataset(p, label_column="label")
    j = tmp_path / "bad.jsonl"
    j.write_text('{"prompt": "a"}\n{not json\n')
    with pytest.raises(DataError, match="line 2: invalid JSON"):
        load_user_dataset(j)
    with pytest.raises(DataError, match="not found"):
        load_user_dataset(tmp_path / "missing.csv")


def test_every_registered_dataset_names_a_licence():
    for info in REGISTRY.values():
        assert info.licence
