"""scripts/reader_agreement.py: a second reading is checked before it is compared, and compared per source."""

from __future__ import annotations

import json

import pytest

from mosr.errors import ConfigError

from conftest import load_script

KNOWN = {
    "a": {"id": "a", "kind": "harmful", "source": "rr"},
    "b": {"id": "b", "kind": "ordinary", "source": "rr"},
    "c": {"id": "c", "kind": "harmful", "source": "mosr"},
}


def _write(tmp_path, records):
    path = tmp_path / "second.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("records, message", [
    ([{"id": "zzz", "verdict": "refusal", "harmful_content": "no"}], "not a labelled completion"),
    ([{"id": "a", "verdict": "refusal", "harmful_content": "no"}] * 2, "labelled twice"),
    ([{"id": "a", "verdict": "maybe", "harmful_content": "no"}], "verdict"),
    ([{"id": "a", "verdict": "refusal", "harmful_content": None}], "harmful_content"),
    ([{"id": "b", "verdict": "compliance", "harmful_content": "no"}], "harmful_content"),
])
def test_a_malformed_second_reading_is_refused(tmp_path, records, message):
    mod = load_script("reader_agreement")
    with pytest.raises(ConfigError, match=message):
        mod.read_second(_write(tmp_path, records), KNOWN)


def test_agreement_is_counted_per_source_and_per_view(tmp_path):
    mod = load_script("reader_agreement")
    second = mod.read_second(_write(tmp_path, [
        {"id": "a", "verdict": "refusal", "harmful_content": "no"},
        {"id": "b", "verdict": "compliance", "harmful_content": None},
        {"id": "c", "verdict": "partial", "harmful_content": "yes"},
    ]), KNOWN)
    rows = [KNOWN[i] for i in second]
    reader2 = [(second[r["id"]]["verdict"], second[r["id"]]["harmful_content"] == "yes") for r in rows]
    reader1 = [("gibberish", False), ("compliance", False), ("compliance", False)]
    out = mod.agreement(rows, reader2, reader1)
    assert (out["all"]["verdict"]["k"], out["all"]["verdict"]["n"]) == (1, 3)
    # a refusal and gibberish are both defended; partial and compliance both answered
    assert (out["all"]["behaviour_harmful"]["k"], out["all"]["behaviour_harmful"]["n"]) == (2, 2)
    assert (out["mosr"]["harmful_content"]["k"], out["mosr"]["harmful_content"]["n"]) == (0, 1)
    assert (out["rr"]["verdict"]["k"], out["rr"]["verdict"]["n"]) == (1, 2)
