"""Extraction: the hidden_states off-by-one, padding, pooling, hooks, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mosr.errors import ConfigError, DataError
from mosr.models import find_layers, format_prompt
from mosr.representations import (
    Representations,
    encode,
    extract,
    hidden_states_reference,
    pooling_weights,
    record_layers,
)
from mosr.testing import tiny_model

PROMPTS = ["How do I bake bread?", "Write a poem about the sea, please, with waves and a silver moon.", "Hi", "What is the capital of France?"]


@pytest.fixture(scope="module")
def tiny():
    return tiny_model(num_layers=4, hidden_size=32)


def test_layer_l_is_hidden_states_l_plus_1(tiny):
    """h_l = output of block l = hidden_states[l + 1]; the last entry of hidden_states is after the final norm."""
    reps = extract(tiny, PROMPTS[:1], pooling="last")
    hs = hidden_states_reference(tiny, PROMPTS[0])
    n = len(find_layers(tiny.model))
    assert len(hs) == n + 1
    for layer in range(n - 1):
        np.testing.assert_allclose(reps.layer(layer)[0], hs[layer + 1][-1].numpy(), atol=1e-5)
        assert not np.allclose(reps.layer(layer)[0], hs[layer][-1].numpy(), atol=1e-3)  # not the block's input
    # the last block's raw output differs from transformers' final (normed) hidden state
    assert not np.allclose(reps.layer(n - 1)[0], hs[n][-1].numpy(), atol=1e-3)
    norm = tiny.model.model.norm
    with torch.inference_mode():
        normed = norm(torch.from_numpy(reps.layer(n - 1)[:1].copy())).numpy()
    np.testing.assert_allclose(normed[0], hs[n][-1].numpy(), atol=1e-4)


def test_last_token_is_end_of_formatted_prompt(tiny):
    row = encode(tiny.tokenizer, "Hi")
    text = format_prompt(tiny.tokenizer, "Hi")
    assert row.ids == tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert row.n_prompt == len(row.ids)
    _, _, _, w = pooling_weights([row], "last", "left")
    assert w[0, -1] == 1 and w.sum() == 1


@pytest.mark.parametrize("pooling", ["last", "prompt-mean", "all-mean"])
def test_batched_equals_one_by_one(tiny, pooling):
    singles = [extract(tiny, [p], pooling=pooling, batch_size=1).vectors[0] for p in PROMPTS]
    for side in ("left", "right"):
        batched = extract(tiny, PROMPTS, pooling=pooling, padding_side=side, batch_size=4)
        for i in range(len(PROMPTS)):
            np.testing.assert_allclose(batched.vectors[i], singles[i], atol=1e-5, err_msg=f"{side} padding, prompt {i}")


def test_prompt_mean_matches_manual_mean(tiny):
    reps = extract(tiny, PROMPTS[:1], pooling="prompt-mean", layers=[1])
    hs = hidden_states_reference(tiny, PROMPTS[0])
    np.testing.assert_allclose(reps.vectors[0, 0], hs[2].mean(0).numpy(), atol=1e-5)


def test_all_mean_covers_the_response(tiny):
    with_resp = extract(tiny, PROMPTS[:1], responses=["Sure, here is a step by step guide."], pooling="all-mean", layers=[0])
    prompt_mean = extract(tiny, PROMPTS[:1], responses=["Sure, here is a step by step guide."], pooling="prompt-mean", layers=[0])
    without = extract(tiny, PROMPTS[:1], pooling="prompt-mean", layers=[0])
    np.testing.assert_allclose(prompt_mean.vectors, without.vectors, atol=1e-5)
    assert not np.allclose(with_resp.vectors, prompt_mean.vectors, atol=1e-3)


def test_hooks_removed_and_logits_identical(tiny):
    ids = torch.tensor([encode(tiny.tokenizer, PROMPTS[1]).ids])
    hooks_before = [dict(block._forward_hooks) for block in find_layers(tiny.model)]
    with torch.inference_mode():
        before = tiny.model(input_ids=ids).logits.clone()
    extract(tiny, PROMPTS, layers=[1, 2])
    holder = {"w": torch.ones(1, ids.shape[1]) / ids.shape[1]}
    with pytest.raises(RuntimeError, match="boom"):
        with record_layers(tiny.model, [0, 3], holder):
            raise RuntimeError("boom")
    assert [dict(block._forward_hooks) for block in find_layers(tiny.model)] == hooks_before
    with torch.inference_mode():
        after = tiny.model(input_ids=ids).logits
    assert torch.equal(before, after)


def test_cache_round_trip_and_key(tiny, tmp_path):
    a = extract(tiny, PROMPTS, layers=[0, 2], cache_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and not any("partial" in f for f in files)
    b = extract(tiny, PROMPTS, layers=[0, 2], cache_dir=tmp_path)
    np.testing.assert_array_equal(np.asarray(a.vectors), np.asarray(b.vectors))
    assert a.meta["cache_key"] == b.meta["cache_key"]
    c = extract(tiny, PROMPTS, layers=[0, 2], pooling="prompt-mean", cache_dir=tmp_path)
    assert c.meta["cache_key"] != a.meta["cache_key"]
    d = extract(tiny, PROMPTS[:3], layers=[0, 2], cache_dir=tmp_path)
    assert d.meta["cache_key"] != a.meta["cache_key"]
    assert len(list(tmp_path.glob("*.npy"))) == 3
    loaded = Representations.load(tmp_path / f"reps-{a.meta['cache_key']}")
    assert loaded.layers == (0, 2) and loaded.vectors.shape == (4, 2, 32)
    with pytest.raises(ConfigError, match="not extracted"):
        loaded.layer(1)
    saved = loaded.save(tmp_path / "copy" / "reps")
    again = Representations.load(saved)
    np.testing.assert_array_equal(np.asarray(again.vectors), np.asarray(loaded.vectors))
    assert again.ids == loaded.ids and again.meta == loaded.meta
    assert b"pickle" not in (tmp_path / f"reps-{a.meta['cache_key']}.npy").read_bytes()[:200]


def test_unknown_layer_and_bad_inputs(tiny):
    with pytest.raises(ConfigError, match="out of range.*4 decoder layers"):
        extract(tiny, PROMPTS, layers=[4])
    with pytest.raises(ConfigError, match="unknown pooling"):
        extract(tiny, PROMPTS, pooling="max")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="no prompts"):
        extract(tiny, [])
    assert extract(tiny, PROMPTS[:1], layers=[-1]).layers == (3,)
