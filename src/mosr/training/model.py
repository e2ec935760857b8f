"""Model plumbing for training: LoRA, layer truncation and hidden-state capture.

* :func:`add_lora` wraps a model with a fresh peft LoRA adapter on chosen blocks and modules. The
  frozen reference is the same model inside ``with model.disable_adapter():``; no second copy of the
  weights exists.
* :func:`truncated` temporarily drops the decoder blocks after the last one a loss needs.
  It mutates the model: use it only as a context manager, which restores the blocks in ``finally``.
* :func:`capture` records ``h_l`` (the output of block ``l``, i.e. ``hidden_states[l + 1]``) with
  forward hooks that are removed on exit.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from mosr.errors import ConfigError
from mosr.models import find_layers


def add_lora(model: nn.Module, *, r: int, alpha: int, dropout: float, modules: Sequence[str], layers: Sequence[int], seed: int,
             b_init_std: float = 0.0) -> nn.Module:
    """Wrap ``model`` in a trainable peft LoRA model; only the LoRA weights require gradients.

    With ``b_init_std > 0`` the LoRA B matrices start from a seeded N(0, b_init_std²) instead of
    peft's zeros, so the adapted model starts slightly off the reference. The reference itself (the
    adapter disabled) is unchanged.
    """
    from peft import LoraConfig, get_peft_model

    target = linear_module_names(model) if list(modules) == ["all-linear"] else list(modules)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target, layers_to_transform=list(layers),
        bias="none", task_type="CAUSAL_LM",
    )
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            peft_model = get_peft_model(model, config)
        except ValueError as exc:
            raise ConfigError(f"lora_modules {list(modules)}: {str(exc).splitlines()[0]}") from exc
        if b_init_std > 0:
            with torch.no_grad():
                for name, p in peft_model.named_parameters():
                    if "lora_B" in name:
                        p.normal_(0.0, b_init_std)
    if not any(p.requires_grad for p in peft_model.parameters()):
        raise ConfigError(f"lora_modules {list(modules)} / lora_layers {list(layers)} matched no module of the model")
    return peft_model


def linear_module_names(model: nn.Module) -> list[str]:
    """Leaf names of the linear layers inside a decoder block (``q_proj``, ``down_proj``...)."""
    names = {name.rsplit(".", 1)[-1] for name, mod in find_layers(model)[0].named_modules() if isinstance(mod, nn.Linear)}
    if not names:
        raise ConfigError("lora_modules all-linear: the decoder blocks contain no nn.Linear; name the modules explicitly")
    return sorted(names)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model inside a peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def backbone(model: nn.Module) -> nn.Module:
    """The decoder stack without the LM head (``get_decoder()``), so representation passes skip the vocabulary projection."""
    inner = unwrap_peft(model)
    dec = inner.get_decoder() if hasattr(inner, "get_decoder") else None
    return dec if isinstance(dec, nn.Module) else inner


def output_head(model: nn.Module) -> nn.Module:
    head = unwrap_peft(model).get_output_embeddings()
    if head is None:
        raise ConfigError(f"{type(unwrap_peft(model)).__name__} has no output embeddings; the refusal cross-entropy needs an LM head")
    return head


@contextmanager
def truncated(model: nn.Module, keep: int) -> Iterator[nn.ModuleList]:
    """Keep only the first ``keep`` decoder blocks inside the block; restore them on exit.

    Hidden states at the kept blocks are unchanged (blocks only see earlier blocks' outputs); the
    final norm now applies to block ``keep − 1``, so callers must read block outputs through
    :func:`capture`, never ``hidden_states[-1]``.
    """
    layers = find_layers(model)
    n = len(layers)
    if not 1 <= keep <= n:
        raise ConfigError(f"cannot keep {keep} of {n} decoder layers")
    removed = [layers[i] for i in range(keep, n)]
    if removed:
        del layers[keep:]
    try:
        yield layers
    finally:
        if removed:
            layers.extend(removed)


def _block_output(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


@contextmanager
def capture(model: nn.Module, layer_ids: Sequence[int]) -> Iterator[dict[int, torch.Tensor]]:
    """Record the outputs ``h_l`` of the given blocks during forward passes inside the block."""
    layers = find_layers(model)
    store: dict[int, torch.Tensor] = {}
    handles = []
    for idx in layer_ids:
        def hook(_m: nn.Module, _a: Any, out: Any, idx: int = idx) -> None:
            store[idx] = _block_output(out)

        handles.append(layers[idx].register_forward_hook(hook))
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def hidden_at(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, layer_ids: Sequence[int], *, truncate: bool) -> torch.Tensor:
    """``[L, B, S, D]`` block outputs at ``layer_ids`` from the backbone (truncated after ``max(layer_ids)`` if asked)."""
    keep = max(layer_ids) + 1 if truncate else len(find_layers(model))
    with truncated(model, keep), capture(model, layer_ids) as store:
        backbone(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return torch.stack([store[i] for i in layer_ids])
