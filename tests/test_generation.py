import torch

from mosr.generation import generate
from mosr.models import format_prompt

PROMPTS = ["How do I bake bread?", "hi", "What is the capital of France? Tell me more please", "Write a poem", "x"]


def _naive(loaded, prompt, n):
    tok = loaded.tokenizer
    ids = tok(format_prompt(tok, prompt), return_tensors="pt", add_special_tokens=False)
    out = loaded.model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    return tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_batched_greedy_matches_one_at_a_time(tiny):
    batched = generate(tiny, PROMPTS, max_new_tokens=12, batch_size=3)
    assert batched == [_naive(tiny, p, 12) for p in PROMPTS]


def test_stops_at_eos_without_decoding_further(tiny):
    eos = tiny.tokenizer.eos_token_id
    calls = []

    def force_eos(module, inputs, output):
        calls.append(output.shape[0])
        output[..., eos] = 1e4
        return output

    handle = tiny.model.lm_head.register_forward_hook(force_eos)
    try:
        outs = generate(tiny, PROMPTS, max_new_tokens=5, batch_size=2)
    finally:
        handle.remove()
    assert outs == [""] * len(PROMPTS)
    assert len(calls) == 3  # one prefill per batch, no decode step after EOS


def test_prefill_and_resume(tiny):
    seen = []
    outs = generate(tiny, PROMPTS, max_new_tokens=6, batch_size=2, response_prefixes=["Sure"] * 5,
                    on_batch=lambda idx, texts: seen.extend(idx))
    assert sorted(seen) == list(range(5))
    assert outs[0] == _naive_prefill(tiny, PROMPTS[0], "Sure", 6)
    done = [True, True, False, True, True]
    partial = generate(tiny, PROMPTS, max_new_tokens=6, batch_size=2, response_prefixes=["Sure"] * 5, done=done)
    assert partial[2] == outs[2]


def _naive_prefill(loaded, prompt, prefix, n):
    tok = loaded.tokenizer
    ids = tok(format_prompt(tok, prompt, response_prefix=prefix), return_tensors="pt", add_special_tokens=False)
    out = loaded.model.generate(**ids, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_ignore_eos_decodes_every_row_to_the_limit(monkeypatch):
    """Benchmarks time equal work: with ignore_eos no stop token ends a row."""
    import mosr.generation as gen
    from mosr.testing import tiny_model

    seen: list[list[int]] = []
    real = gen._generate_batch

    def spy(loaded, texts, max_new_tokens, stop_ids):
        seen.append(list(stop_ids))
        return real(loaded, texts, max_new_tokens, stop_ids)

    monkeypatch.setattr(gen, "_generate_batch", spy)
    loaded = tiny_model()
    gen.generate(loaded, ["hi there", "how are you"], max_new_tokens=4)
    gen.generate(loaded, ["hi there", "how are you"], max_new_tokens=4, ignore_eos=True)
    assert seen[0] and seen[1] == []
    tok_lists = real(loaded, ["a b c"], 6, [])
    assert [len(t) for t in tok_lists] == [6]
