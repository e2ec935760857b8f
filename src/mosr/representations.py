"""Pooled residual-stream representations of prompts, extracted in batches and cached on disk.

``h_l(x)`` is the residual stream after decoder block ``l`` (0-based), i.e. the output of
``find_layers(model)[l]``. In transformers' ``output_hidden_states`` that is ``hidden_states[l + 1]``
for every block but the last one: the final entry of ``hidden_states`` has the model's final norm
applied. Extraction reads block outputs with forward hooks, so every layer, the last included, is the
raw residual stream.

Memory stays bounded: a hook pools each chosen block's output as soon as it is computed, only the
pooled vectors of the chosen layers are kept (``[batch, n_layers, hidden]``), and each batch is
written straight into a memory-mapped ``.npy`` file. The forward pass stops after the deepest chosen
layer, so later blocks and the LM head are never run.

Poolings (:data:`Pooling`):

* ``last``: the last token of ``format_prompt(prompt)``, the position right before the answer.
* ``prompt-mean``: the mean over all tokens of the formatted prompt (chat template included).
* ``all-mean``: the mean over prompt and response tokens; equal to ``prompt-mean`` when no
  responses are given.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import nn

from mosr.distributed import ProcessGroup
from mosr.errors import ConfigError, DataError, RunError
from mosr.models import LoadedModel, check_layers, find_layers, format_prompt
from mosr.progress import progress

log = logging.getLogger(__name__)

Pooling = Literal["last", "prompt-mean", "all-mean"]
POOLINGS: tuple[str, ...] = get_args(Pooling)
CACHE_FORMAT = 1


@dataclass
class Representations:
    """Pooled vectors ``[n_prompts, n_layers, hidden]`` for the layers in ``layers`` (in that order)."""

    vectors: np.ndarray
    layers: tuple[int, ...]
    pooling: str
    ids: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    by_process: list[int] = field(default_factory=list, repr=False)  # prompts each process extracted; [] from the cache

    def layer(self, layer: int) -> np.ndarray:
        """Vectors ``[n_prompts, hidden]`` of one decoder layer (its model index, not its position)."""
        if layer not in self.layers:
            raise ConfigError(f"layer {layer} was not extracted; extracted layers: {list(self.layers)}")
        return np.asarray(self.vectors[:, self.layers.index(layer), :])

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``PATH.npy`` (plain array, no pickle) and ``PATH.json`` (layers, pooling, ids, meta)."""
        base = Path(path)
        base.parent.mkdir(parents=True, exist_ok=True)
        tmp = base.with_name(base.name + ".tmp.npy")
        np.save(tmp, np.asarray(self.vectors, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, base.with_suffix(".npy"))
        _write_sidecar(base.with_suffix(".json"), self)
        return base.with_suffix(".npy")

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> Representations:
        base = Path(path)
        npy, side = base.with_suffix(".npy"), base.with_suffix(".json")
        if not npy.is_file() or not side.is_file():
            raise RunError(f"no cached representations at {base} (need {npy.name} and {side.name})")
        meta = json.loads(side.read_text(encoding="utf-8"))
        vectors = np.load(npy, mmap_mode="r" if mmap else None, allow_pickle=False)
        if vectors.shape[:2] != (len(meta["ids"]), len(meta["layers"])):
            raise RunError(f"{npy} has shape {vectors.shape}, which does not match {side.name}; delete both and re-run")
        return cls(vectors, tuple(meta["layers"]), meta["pooling"], list(meta["ids"]), meta.get("meta", {}))


def _write_sidecar(path: Path, reps: Representations) -> None:
    payload = {"layers": list(reps.layers), "pooling": reps.pooling, "ids": reps.ids, "meta": reps.meta}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=0), encoding="utf-8")
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------- hooks
class _StopForward(Exception):
    """Raised by the hook of the deepest chosen layer to skip the rest of the model."""


def _block_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def record_layers(
    model: nn.Module, layers: Sequence[int], weights: dict[str, torch.Tensor], *, stop_after_last: bool = False
) -> Iterator[dict[int, torch.Tensor]]:
    """Pool the output of the decoder blocks ``layers`` during forward passes run inside the block.

    ``weights["w"]`` (``[batch, seq]``, rows summing to 1) must be set before each forward pass; the
    hook stores ``einsum("bt,bth->bh")`` per layer in the yielded dict. With ``stop_after_last`` the
    deepest chosen block raises :class:`_StopForward` (caught by :func:`forward_pooled`). Hooks are
    always removed on exit, also on errors.
    """
    blocks = find_layers(model)
    layers = check_layers(model, list(layers))
    deepest = max(layers)
    store: dict[int, torch.Tensor] = {}
    handles = []

    def make_hook(idx: int):
        def hook(_module: nn.Module, _args: Any, output: Any) -> None:
            hidden = _block_output(output)
            w = weights["w"].to(hidden.dtype)
            store[idx] = torch.einsum("bt,bth->bh", w, hidden).float()
            if stop_after_last and idx == deepest:
                raise _StopForward

        return hook

    try:
        for idx in sorted(set(layers)):
            handles.append(blocks[idx].register_forward_hook(make_hook(idx)))
        yield store
    finally:
        for handle in handles:
            handle.remove()


# ---------------------------------------------------------------------------------------- batching
@dataclass(frozen=True)
class _Encoded:
    ids: list[int]
    n_prompt: int


def encode(tokenizer: Any, prompt: str, response: str | None = None, *, system: str | None = None) -> _Encoded:
    """Token ids of the formatted prompt (plus an optional response) and the number of prompt tokens."""
    prompt_ids = tokenizer(format_prompt(tokenizer, prompt, system=system), add_special_tokens=False)["input_ids"]
    resp_ids = tokenizer(response, add_special_tokens=False)["input_ids"] if response else []
    if not prompt_ids:
        raise DataError(f"prompt {prompt[:40]!r} encodes to no tokens")
    return _Encoded(list(prompt_ids) + list(resp_ids), len(prompt_ids))


def pooling_weights(rows: Sequence[_Encoded], pooling: str, padding_side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded ``input_ids``, ``attention_mask``, ``position_ids`` and pooling weights ``[batch, seq]``.

    Position ids count only real tokens, so a left-padded row gets the same positions (and thus the
    same representations) as the row alone.
    """
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if padding_side not in ("left", "right"):
        raise ConfigError(f"padding side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(r.ids) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    weights = torch.zeros(len(rows), width, dtype=torch.float32)
    for i, row in enumerate(rows):
        start = width - len(row.ids) if padding_side == "left" else 0
        ids[i, start : start + len(row.ids)] = torch.tensor(row.ids)
        mask[i, start : start + len(row.ids)] = 1
        if pooling == "last":
            weights[i, start + row.n_prompt - 1] = 1.0
        elif pooling == "prompt-mean":
            weights[i, start : start + row.n_prompt] = 1.0 / row.n_prompt
        else:
            weights[i, start : start + len(row.ids)] = 1.0 / len(row.ids)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions, weights


def forward_pooled(
    model: nn.Module, rows: Sequence[_Encoded], layers: Sequence[int], pooling: str, *, pad_id: int, padding_side: str = "left"
) -> torch.Tensor:
    """Pooled block outputs ``[batch, len(layers), hidden]`` (float32) for one batch."""
    ids, mask, positions, w = pooling_weights(rows, pooling, padding_side)
    ids = ids.masked_fill(mask == 0, pad_id)
    device = next(model.parameters()).device
    holder = {"w": w.to(device)}
    with torch.inference_mode(), record_layers(model, layers, holder, stop_after_last=True) as store:
        try:
            model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device), use_cache=False)
        except _StopForward:
            pass
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise RunError(f"no output recorded for layers {missing}; the model skipped those blocks")
    return torch.stack([store[layer] for layer in layers], dim=1).cpu()


# ------------------------------------------------------------------------------------------ cache
def adapter_digest(adapter: str | os.PathLike[str] | None) -> str | None:
    """Content hash of a LoRA adapter folder (config + weights), so a retrained adapter misses the cache."""
    if adapter is None:
        return None
    folder = Path(adapter)
    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"):
        path = folder / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def texts_hash(ids: Sequence[str], prompts: Sequence[str], responses: Sequence[str | None] | None) -> str:
    digest = hashlib.sha256()
    for i, sid in enumerate(ids):
        digest.update(json.dumps([sid, prompts[i], responses[i] if responses else None], ensure_ascii=False).encode())
    return digest.hexdigest()


def cache_key(loaded: LoadedModel, data_hash: str, layers: Sequence[int], pooling: str, system: str | None) -> str:
    """Key of one extraction: model fingerprint, adapter content, data, layers, pooling, system prompt, dtype."""
    dtype = str(next(loaded.model.parameters()).dtype)
    spec = {
        "format": CACHE_FORMAT, "model": loaded.fingerprint, "adapter": adapter_digest(loaded.adapter), "data": data_hash,
        "layers": list(layers), "pooling": pooling, "system": system, "dtype": dtype,
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------------- extraction
def extract(
    loaded: LoadedModel,
    prompts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    pooling: Pooling = "last",
    ids: Sequence[str] | None = None,
    responses: Sequence[str | None] | None = None,
    system: str | None = None,
    batch_size: int = 16,
    padding_side: Literal["left", "right"] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    desc: str = "extract",
    group: ProcessGroup | None = None,
) -> Representations:
    """Pooled representations of ``prompts`` at ``layers`` (default: all), cached under ``cache_dir``.

    Prompts are raw user turns; the chat template is applied here. Batches are length-sorted and each
    batch is written to disk (or to memory when ``cache_dir`` is None) as soon as it is computed.
    Under several processes (``group``, :mod:`mosr.distributed`) the batches are dealt round-robin,
    every process receives the others' vectors, and only the main process writes the cache; each
    prompt is computed in the same batch as with one process (``by_process`` counts each one's share).
    """
    group = group or ProcessGroup()
    if not prompts:
        raise DataError("no prompts to extract representations for")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if pooling not in POOLINGS:
        raise ConfigError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    if responses is not None and len(responses) != len(prompts):
        raise ConfigError(f"got {len(responses)} responses for {len(prompts)} prompts")
    model, tok = loaded.model, loaded.tokenizer
    all_layers = list(range(len(find_layers(model))))
    chosen = tuple(check_layers(model, list(layers) if layers is not None else all_layers))
    ids = [str(i) for i in (ids if ids is not None else range(len(prompts)))]
    if len(ids) != len(prompts):
        raise ConfigError(f"got {len(ids)} ids for {len(prompts)} prompts")
    side = padding_side or getattr(tok, "padding_side", "left") or "left"
    data_hash = texts_hash(ids, prompts, responses)
    key = cache_key(loaded, data_hash, chosen, pooling, system)
    target = Path(cache_dir) / f"reps-{key}" if cache_dir is not None else None
    if target is not None and group.on_main(lambda: target.with_suffix(".npy").is_file() and target.with_suffix(".json").is_file()):
        log.info("representations cache hit: %s", target)
        return Representations.load(target)

    encoded = [encode(tok, p, responses[i] if responses else None, system=system) for i, p in enumerate(prompts)]
    hidden = int(getattr(getattr(model, "config", None), "hidden_size", 0)) or _probe_hidden(model, tok, encoded[0], chosen[0])
    shape = (len(prompts), len(chosen), hidden)
    partial = None
    if target is not None and group.is_main:
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".partial.npy")
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=shape)
    else:
        out = np.zeros(shape, dtype=np.float32)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    n_tokens = sum(len(e.ids) for e in encoded)
    padded = sum(len(batch) * max(len(encoded[i].ids) for i in batch) for batch in batches)
    owns = group.dealer()
    mine = [batch for b, batch in enumerate(batches) if owns is None or owns(b)]
    start = time.perf_counter()
    try:
        for batch in progress(mine, desc=desc, unit="batch"):
            rows = [encoded[i] for i in batch]
            out[batch] = forward_pooled(model, rows, chosen, pooling, pad_id=pad_id, padding_side=side).numpy()
        by_process = [len(prompts)]
        if group.world > 1:
            parts = group.gather([(batch, np.array(out[batch])) for batch in mine])
            for part in parts:
                for batch, vectors in part:
                    out[batch] = vectors
            by_process = [sum(len(batch) for batch, _ in part) for part in parts]
        seconds = time.perf_counter() - start
        meta = {
            "cache_key": key, "model": loaded.fingerprint, "spec": loaded.spec, "adapter": loaded.adapter,
            "adapter_digest": adapter_digest(loaded.adapter), "data_hash": data_hash, "system": system,
            "padding_side": side, "batch_size": batch_size, "n_tokens": n_tokens, "n_padded_tokens": padded,
            "seconds": round(seconds, 3),
        }
        reps = Representations(out, chosen, pooling, ids, meta, by_process)
        if target is not None and partial is not None:  # the main process writes the cache
            out.flush()
            del out
            os.replace(partial, target.with_suffix(".npy"))
            _write_sidecar(target.with_suffix(".json"), reps)
            reps = Representations.load(target)
            reps.by_process = by_process
        return reps
    finally:
        if partial is not None and partial.exists():
            partial.unlink(missing_ok=True)


def _probe_hidden(model: nn.Module, tok: Any, row: _Encoded, layer: int) -> int:
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    return int(forward_pooled(model, [row], [layer], "last", pad_id=pad_id).shape[-1])


def hidden_states_reference(loaded: LoadedModel, prompt: str, *, system: str | None = None) -> tuple[torch.Tensor, ...]:
    """transformers' own ``output_hidden_states`` for one formatted prompt (for checks and tests)."""
    row = encode(loaded.tokenizer, prompt, system=system)
    with torch.inference_mode():
        out = loaded.model(input_ids=torch.tensor([row.ids], device=loaded.device), output_hidden_states=True)
    return tuple(h[0].float().cpu() for h in out.hidden_states)
