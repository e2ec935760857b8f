"""Batched greedy generation.

Prompts are chat-formatted with :func:`mosr.models.format_prompt`, sorted by length, left-padded and
decoded in batches with a KV cache. Rows that have produced an end-of-turn token are dropped from the
batch (and from the cache) as they finish, so short answers do not pay for long ones. Greedy
decoding; outputs are identical to one-prompt-at-a-time ``model.generate`` up to floating-point
differences from padding (see benchmarks/generation.py, which measures agreement).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from mosr.errors import ConfigError
from mosr.models import LoadedModel, format_prompt
from mosr.progress import progress

log = logging.getLogger(__name__)

_ROW_LISTENERS: list[Callable[[torch.Tensor], None]] = []


@contextlib.contextmanager
def on_rows_kept(callback: Callable[[torch.Tensor], None]) -> Iterator[None]:
    """Inside the block, call ``callback(keep)`` whenever finished rows leave a decoding batch.

    ``keep`` holds the indices of the rows that stay. Hooks with per-row state (SCANS steering) use
    it to follow the batch as it shrinks.
    """
    _ROW_LISTENERS.append(callback)
    try:
        yield
    finally:
        _ROW_LISTENERS.remove(callback)


@dataclass(frozen=True)
class GenerationConfig:
    """How completions are produced."""

    max_new_tokens: int = 64
    batch_size: int = 32
    system: str | None = None
    max_batch_tokens: int | None = None  # rows x (longest prompt + max_new_tokens) per batch; None = rows only

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_batch_tokens is not None and self.max_batch_tokens < 1:
            raise ConfigError(f"max_batch_tokens must be >= 1, got {self.max_batch_tokens}")


def plan_batches(lengths: Sequence[int], *, batch_size: int, max_new_tokens: int, max_batch_tokens: int | None = None) -> list[list[int]]:
    """Prompt indices per batch: longest first, at most ``batch_size`` rows and ``max_batch_tokens`` tokens.

    A batch costs rows x (its longest prompt + ``max_new_tokens``) tokens of KV cache. The batches are
    a function of the prompt lengths alone, so a resumed run decodes each prompt in the same batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    start = 0
    while start < len(order):
        width = lengths[order[start]] + max_new_tokens
        rows = batch_size
        if max_batch_tokens is not None:
            if width > max_batch_tokens:
                raise ConfigError(
                    f"max_batch_tokens {max_batch_tokens} is below what one prompt needs ({lengths[order[start]]} prompt tokens + "
                    f"max_new_tokens {max_new_tokens}); raise max_batch_tokens to at least {width}"
                )
            rows = max(1, min(batch_size, max_batch_tokens // width))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """End-of-sequence ids: the tokenizer's EOS, the common end-of-turn tokens it has, and the EOS ids
    of the model's generation config (where models such as Gemma declare their end of turn)."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    declared = getattr(generation_config, "eos_token_id", None)
    for tid in ([declared] if isinstance(declared, int) else declared or []):
        ids.add(int(tid))
    for tok in ("<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "</s>", "<|endoftext|>"):
        tid = tokenizer.convert_tokens_to_ids(tok) if tok in tokenizer.get_vocab() else None
        if tid is not None and tid != tokenizer.unk_token_id:
            ids.add(int(tid))
    return sorted(ids)


def _select_cache_rows(cache, keep: torch.Tensor):
    """Keep only ``keep`` rows of a transformers KV cache (DynamicCache or legacy tuple)."""
    if hasattr(cache, "batch_select_indices"):
        cache.batch_select_indices(keep)
        return cache
    if hasattr(cache, "layers"):
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
        return cache
    return tuple(tuple(t.index_select(0, keep) for t in layer) for layer in cache)


def _buffered_layer_class():
    """A transformers ``DynamicLayer`` that writes each step's keys and values into a buffer sized for
    the whole batch, instead of concatenating a new copy of its cache at every step.

    ``DynamicLayer.update`` copies the layer's whole cache once per decoding step (two copies per
    layer per token); at batch 64 on the default model those copies were about a third of the
    profiled decoding time (docs/EVALUATION.md, "Generation"). Here
    ``keys``/``values`` are views of the first ``n`` positions of the buffer, holding the same
    numbers in the same order, so attention computes exactly what it computed before. None where
    this transformers has no ``DynamicLayer`` (older cache API)."""
    try:
        from transformers.cache_utils import DynamicLayer
    except ImportError:  # pragma: no cover - older transformers
        return None

    class BufferedLayer(DynamicLayer):
        def __init__(self, capacity: int) -> None:
            super().__init__()
            self.capacity = capacity
            self._keys: torch.Tensor | None = None
            self._values: torch.Tensor | None = None

        def _allocate(self, keys: torch.Tensor, values: torch.Tensor, capacity: int, filled: int) -> None:
            """New buffers of ``capacity`` positions for the rows of ``keys``/``values``, holding their first ``filled``."""
            rows = keys.shape[0]
            kb, vb = keys.new_empty((rows, keys.shape[1], capacity, keys.shape[-1])), values.new_empty((rows, values.shape[1], capacity, values.shape[-1]))
            if filled:
                kb[:, :, :filled] = keys
                vb[:, :, :filled] = values
            self._keys, self._values, self.capacity = kb, vb, capacity
            self.keys, self.values = kb[:, :, :filled], vb[:, :, :filled]

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.device = key_states.device
            self._allocate(key_states, value_states, self.capacity, 0)
            self.is_initialized = True

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            filled = self.keys.shape[-2]
            end = filled + key_states.shape[-2]
            if end > self.capacity:  # more than planned (a caller decoding past max_new_tokens): grow once
                self._allocate(self.keys, self.values, max(end, 2 * self.capacity), filled)
            self._keys[:, :, filled:end] = key_states
            self._values[:, :, filled:end] = value_states
            self.keys, self.values = self._keys[:, :, :end], self._values[:, :, :end]
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                filled = self.keys.shape[-2]
                self._allocate(self.keys[indices], self.values[indices], self.capacity, filled)

    return BufferedLayer


_BUFFERED_LAYER = _buffered_layer_class()


def _buffered_cache(model: torch.nn.Module, capacity: int):
    """A ``DynamicCache`` of :func:`_buffered_layer_class` layers holding ``capacity`` positions, or None
    (the model then builds its own cache) where the model's layers are not plain full-attention
    ``DynamicLayer`` s, for example sliding-window or linear-attention layers."""
    if _BUFFERED_LAYER is None:  # pragma: no cover - older transformers
        return None
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # noqa: BLE001 - a config this transformers cannot map: use the model's own cache
        log.debug("no buffered KV cache for %s", type(model).__name__, exc_info=True)
        return None
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [_BUFFERED_LAYER(capacity) for _ in cache.layers]
    return cache


def _accepts(model: torch.nn.Module, name: str) -> bool:
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def _cache_names(model: torch.nn.Module) -> tuple[str, str]:
    """Keyword and output attribute of the KV cache (``cache`` in newer transformers)."""
    if _accepts(model, "cache"):
        return "cache", "cache"
    return "past_key_values", "past_key_values"


@torch.inference_mode()
def _generate_batch(loaded: LoadedModel, texts: list[str], max_new_tokens: int, stop_ids: list[int]) -> list[list[int]]:
    tok, model = loaded.tokenizer, loaded.model
    device = loaded.device
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    input_ids = enc["input_ids"].to(device)
    attn = enc["attention_mask"].to(device)
    n = input_ids.shape[0]
    out: list[list[int]] = [[] for _ in range(n)]
    alive = torch.arange(n, device=device)
    stop = torch.tensor(stop_ids, device=device)
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    cache_arg, cache_out = _cache_names(model)
    extra = {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}
    past = _buffered_cache(model, input_ids.shape[1] + max_new_tokens)
    step_input, step_pos = input_ids, position_ids
    for _ in range(max_new_tokens):
        res = model(input_ids=step_input, attention_mask=attn, position_ids=step_pos, use_cache=True, **{cache_arg: past}, **extra)
        past = getattr(res, cache_out)
        next_tok = res.logits[:, -1, :].max(dim=-1).indices  # the first maximal index, as argmax; about 2x faster on CPU
        finished = torch.isin(next_tok, stop)
        for row, token, stopped in zip(alive.tolist(), next_tok.tolist(), finished.tolist()):
            if not stopped:
                out[row].append(token)
        keep = (~finished).nonzero(as_tuple=True)[0]
        if keep.numel() == 0:
            break
        if keep.numel() < alive.numel():
            alive = alive.index_select(0, keep)
            next_tok = next_tok.index_select(0, keep)
            attn = attn.index_select(0, keep)
            step_pos = step_pos.index_select(0, keep)
            past = _select_cache_rows(past, keep)
            for listener in list(_ROW_LISTENERS):
                listener(keep)
        attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
        step_pos = step_pos[:, -1:] + 1
        step_input = next_tok[:, None]
    return out


def generate(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 64,
    batch_size: int = 32,
    system: str | None = None,
    response_prefixes: Sequence[str] | None = None,
    desc: str = "generating",
    on_batch: Callable[[list[int], list[str]], None] | None = None,
    done: Sequence[bool] | None = None,
    max_batch_tokens: int | None = None,
    owns: Callable[[int], bool] | None = None,
    ignore_eos: bool = False,
) -> list[str]:
    """Greedy completions for raw user prompts, in the order given.

    ``response_prefixes`` (one per prompt, may be empty strings) are placed at the start of the
    assistant turn, for prefilling attacks; the returned completion excludes the prefix.
    ``on_batch(indices, completions)`` is called after each batch, so callers can persist results as
    they finish. Batches are fixed by prompt length alone, so a resumed run (``done`` marks prompts
    already finished; batches made only of those are skipped and return ``""``) decodes every
    remaining prompt in exactly the batch it had in an uninterrupted run. ``max_batch_tokens`` bounds
    each batch by rows x (longest prompt + ``max_new_tokens``), so memory stays within a stated budget.
    ``owns(batch_index)``, asked once for every batch of that plan in order, leaves the batches it
    declines to other data-parallel processes (:mod:`mosr.distributed`); their prompts return ``""``.
    ``ignore_eos`` (benchmarks only) decodes exactly ``max_new_tokens`` for every row, so two
    settings that end answers at different points can be timed on the same amount of work.
    """
    config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=batch_size, system=system, max_batch_tokens=max_batch_tokens)
    if response_prefixes is not None and len(response_prefixes) != len(prompts):
        raise ConfigError(f"{len(response_prefixes)} response prefixes for {len(prompts)} prompts")
    tok = loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    texts = [
        format_prompt(tok, p, system=config.system, response_prefix=(response_prefixes[i] if response_prefixes else ""))
        for i, p in enumerate(prompts)
    ]
    lengths = [len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]
    batches = plan_batches(lengths, batch_size=config.batch_size, max_new_tokens=config.max_new_tokens,
                           max_batch_tokens=config.max_batch_tokens)
    stop_ids = [] if ignore_eos else stop_token_ids(tok, getattr(loaded.model, "generation_config", None))
    results: list[str | None] = [None] * len(texts)
    bar = progress(total=len(texts), desc=desc, unit="prompt")
    try:
        for b, idx in enumerate(batches):
            if (owns is not None and not owns(b)) or (done is not None and all(done[i] for i in idx)):
                bar.update(len(idx))
                continue
            token_lists = _generate_batch(loaded, [texts[i] for i in idx], config.max_new_tokens, stop_ids)
            decoded = tok.batch_decode(token_lists, skip_special_tokens=True)
            for i, text in zip(idx, decoded):
                results[i] = text.strip()
            if on_batch is not None:
                on_batch(idx, [results[i] for i in idx])  # type: ignore[misc]
            bar.update(len(idx))
    finally:
        bar.close()
    return [r if r is not None else "" for r in results]
