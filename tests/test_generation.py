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


def test_the_buffered_kv_cache_decodes_exactly_what_the_concatenating_cache_did(monkeypatch):
    """Greedy tokens are pinned to the transformers DynamicCache path, with rows leaving the batch mid-way."""
    import mosr.generation as gen
    from mosr.testing import tiny_model

    varied = tiny_model(init_std=0.3)  # varied text: a wrong cache position would show
    eos = varied.tokenizer.eos_token_id
    prompts = [*PROMPTS, "Tell me a story about a cat", "Why is the sky blue?", "2+2"]

    def run() -> tuple[list[str], list[int]]:
        steps, widths = iter(range(100)), []

        def end_a_row_per_step(module, inputs, output):  # at step k, row k of the current batch ends
            k, rows = next(steps), output.shape[0]
            widths.append(rows)
            if 0 < k < rows:
                output[k, ..., eos] = 1e4
            return output

        handle = varied.model.lm_head.register_forward_hook(end_a_row_per_step)
        try:
            return generate(varied, prompts, max_new_tokens=9, batch_size=8), widths
        finally:
            handle.remove()

    updates = []
    monkeypatch.setattr(gen._BUFFERED_LAYER, "update", _spy(gen._BUFFERED_LAYER.update, updates))
    buffered, widths = run()
    assert updates and widths[:4] == [8, 8, 7, 6]  # the buffered layers ran, and rows left the batch
    monkeypatch.setattr(gen, "_buffered_cache", lambda model, capacity: None)
    updates.clear()
    concatenated, widths_before = run()
    assert not updates and widths_before == widths
    assert buffered == concatenated
    assert len(set(buffered)) > 4


def _spy(fn, calls: list):
    def wrapper(self, *args, **kwargs):
        calls.append(1)
        return fn(self, *args, **kwargs)

    return wrapper


def test_a_buffered_layer_grows_past_its_planned_length():
    from mosr.generation import _BUFFERED_LAYER

    layer = _BUFFERED_LAYER(capacity=3)
    k = torch.arange(2 * 2 * 5 * 4, dtype=torch.float32).reshape(2, 2, 5, 4)
    layer.update(k[:, :, :2], -k[:, :, :2])
    layer.batch_select_indices(torch.tensor([1, 0]))
    keys, values = layer.update(k[[1, 0], :, 2:5], -k[[1, 0], :, 2:5])  # 5 positions in a buffer of 3
    assert torch.equal(keys, k[[1, 0]]) and torch.equal(values, -k[[1, 0]])
    assert layer.get_seq_length() == 5 and layer.capacity >= 5


def test_a_tie_between_top_logits_goes_to_the_first_token(tiny):
    """Greedy picks the lowest token id among equal maxima, as argmax and model.generate do."""
    a, b = 11, 7  # both maximal; 7 must win
    steps = []

    def tie(module, inputs, output):
        steps.append(1)
        output[..., a] = output[..., b] = 1e4
        return output

    handle = tiny.model.lm_head.register_forward_hook(tie)
    try:
        from mosr.generation import _generate_batch, stop_token_ids

        tokens = _generate_batch(tiny, ["hi", "Write a poem"], 3, stop_token_ids(tiny.tokenizer))
    finally:
        handle.remove()
    assert tokens == [[b, b, b], [b, b, b]]


def test_stop_ids_include_the_end_of_turn_the_generation_config_declares(tiny):
    from types import SimpleNamespace

    from mosr.generation import stop_token_ids

    base = stop_token_ids(tiny.tokenizer)
    assert tiny.tokenizer.eos_token_id in base
    assert stop_token_ids(tiny.tokenizer, SimpleNamespace(eos_token_id=[7, 9])) == sorted(set(base) | {7, 9})
    assert stop_token_ids(tiny.tokenizer, SimpleNamespace(eos_token_id=11)) == sorted(set(base) | {11})
    assert stop_token_ids(tiny.tokenizer, SimpleNamespace(eos_token_id=None)) == base


def test_generation_stops_at_a_declared_end_of_turn(tiny, monkeypatch):
    import mosr.generation as gen

    seen = []
    real = gen._generate_batch
    monkeypatch.setattr(gen, "_generate_batch", lambda *a: seen.append(real(*a)) or seen[-1])
    gen.generate(tiny, ["hi"], max_new_tokens=4, batch_size=1)
    free = seen[-1][0]
    assert len(free) == 4  # the tiny model does not stop by itself within 4 tokens
    monkeypatch.setattr(tiny.model.generation_config, "eos_token_id", [free[0]])
    gen.generate(tiny, ["hi"], max_new_tokens=4, batch_size=1)
    assert seen[-1] == [[]]  # stopped at once: the declared end of turn is the first token
