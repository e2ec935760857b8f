"""``steer(model, artifact)``: forward hooks that exist only inside a ``with`` block.

Hooks act on decoder-block outputs (found by :func:`mosr.models.find_layers`, so peft wrappers and
other architectures work without a model switch) and are removed in ``finally``, also when the
block raises. How each method acts:

* ``refusal-direction``, mode ``add``: ``h_l += strength * r_l`` at its one layer, every position
  (prompt and generated tokens), as activation addition in Arditi et al.
* ``refusal-direction``, mode ``ablate``: ``h -= strength * (h . r^) r^`` on the input of block 0
  and on the output of every block, i.e. everywhere in the residual stream between blocks.
* ``alphasteer``: on the prompt pass only (``seq_len > 1``), ``h_l += strength * h_l[:, -1] @ Delta_l``
  at each of its layers, broadcast over the prompt positions; decoding steps see the steered prompt
  through the KV cache, as in AlphaSteer's reference implementation.
* ``scans``: before the prompt pass, one extra forward pass on ``prompt + response start`` gives
  each query's transition cosine; queries at or above the threshold are steered towards refusal
  (``+strength * r_l``), the others away from it (``-strength * r_l``), on the last prompt position
  and every generated token. On a generation prefill (``use_cache=True``, empty cache) that extra
  pass also fills the KV cache, and the prompt pass then runs on the last prompt token alone, so the
  classifier costs the response start plus one position instead of a second prompt pass. The per-row decision follows rows that :mod:`mosr.generation` drops
  from a batch when they finish (:func:`mosr.generation.on_rows_kept`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mosr.errors import ConfigError, RunError
from mosr.models import LoadedModel, check_layers, find_layers
from mosr.steering.artifact import SteeringArtifact
from mosr.steering.maths import add_vector, alphasteer_shift, project_out, transition_cosine


class _StopForward(Exception):
    """Ends the SCANS classification pass after the deepest layer it needs."""


@dataclass
class SteeringState:
    """What the hooks saw; exposed for tests and for the record (SCANS decisions per prompt)."""

    calls: int = 0
    harmful: torch.Tensor | None = None  # scans: per-row decision of the current batch
    cosines: list[float] = field(default_factory=list)  # scans: every classified prompt, in order
    decisions: list[bool] = field(default_factory=list)
    classifying: bool = False
    stop_at: int = -1  # scans: the block after which the classification pass stops
    reused_prefills: int = 0  # scans: prompt passes that ran on the classification pass's KV cache
    recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def keep_rows(self, keep: torch.Tensor) -> None:
        if self.harmful is not None:
            self.harmful = self.harmful.index_select(0, keep.to(self.harmful.device))


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _module(model: nn.Module | LoadedModel) -> nn.Module:
    return model.model if isinstance(model, LoadedModel) else model


@contextlib.contextmanager
def steer(model: nn.Module | LoadedModel, artifact: SteeringArtifact, *, strength: float | None = None) -> Iterator[SteeringState]:
    """Apply ``artifact`` to ``model`` inside the block; the model is unchanged before and after.

    ``strength`` overrides the artifact's chosen strength (0 gives outputs identical to no steering).
    Batches must be left-padded (as :func:`mosr.generation.generate` makes them) for ``alphasteer``
    and ``scans``, which read the last prompt position.
    """
    module = _module(model)
    blocks = find_layers(module)
    check_layers(module, list(artifact.layers) + list(artifact.classify_layers), "steering layer")
    s = float(artifact.strength if strength is None else strength)
    if s < 0:
        raise ConfigError(f"strength must be >= 0 (0 = no steering), got {s}")
    param = next(module.parameters())
    tensors = {k: v.to(param.device, param.dtype) for k, v in artifact.tensors.items()}
    state = SteeringState()
    handles: list[Any] = []
    with contextlib.ExitStack() as stack:
        try:
            if artifact.method == "refusal-direction" and artifact.mode == "ablate":
                _install_ablation(blocks, tensors[f"direction.{artifact.layers[0]}"], s, handles, state)
            elif artifact.method == "refusal-direction":
                _install_addition(blocks, artifact, tensors, s, handles, state)
            elif artifact.method == "alphasteer":
                _install_alphasteer(blocks, artifact, tensors, s, handles, state)
            else:
                from mosr.generation import on_rows_kept

                _install_scans(module, blocks, artifact, tensors, s, handles, state)
                stack.enter_context(on_rows_kept(state.keep_rows))
            yield state
        finally:
            for handle in handles:
                handle.remove()


def _install_ablation(blocks: nn.ModuleList, direction: torch.Tensor, s: float, handles: list[Any], state: SteeringState) -> None:
    def pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> Any:
        state.calls += 1
        if args:
            return (project_out(args[0], direction, s), *args[1:]), kwargs
        kwargs = dict(kwargs)
        kwargs["hidden_states"] = project_out(kwargs["hidden_states"], direction, s)
        return args, kwargs

    def hook(_m: nn.Module, _args: Any, output: Any) -> Any:
        return _replace(output, project_out(_hidden(output), direction, s))

    handles.append(blocks[0].register_forward_pre_hook(pre_hook, with_kwargs=True))
    for block in blocks:
        handles.append(block.register_forward_hook(hook))


def _install_addition(blocks: nn.ModuleList, artifact: SteeringArtifact, tensors: dict[str, torch.Tensor], s: float,
                      handles: list[Any], state: SteeringState) -> None:
    for layer in artifact.layers:
        vector = tensors[f"direction.{layer}"]

        def hook(_m: nn.Module, _args: Any, output: Any, vector: torch.Tensor = vector) -> Any:
            state.calls += 1
            return _replace(output, add_vector(_hidden(output), vector, s))

        handles.append(blocks[layer].register_forward_hook(hook))


def _install_alphasteer(blocks: nn.ModuleList, artifact: SteeringArtifact, tensors: dict[str, torch.Tensor], s: float,
                        handles: list[Any], state: SteeringState) -> None:
    for layer in artifact.layers:
        matrix = tensors[f"matrix.{layer}"]

        def hook(_m: nn.Module, _args: Any, output: Any, matrix: torch.Tensor = matrix) -> Any:
            h = _hidden(output)
            if h.shape[1] <= 1:  # a decoding step: the prompt was steered already
                return None
            state.calls += 1
            return _replace(output, h + alphasteer_shift(h[:, -1, :], matrix, s).unsqueeze(1))

        handles.append(blocks[layer].register_forward_hook(hook))


def _install_scans(module: nn.Module, blocks: nn.ModuleList, artifact: SteeringArtifact, tensors: dict[str, torch.Tensor],
                   s: float, handles: list[Any], state: SteeringState) -> None:
    classify = sorted(set(artifact.classify_layers))
    deepest = max(classify)
    last = len(blocks) - 1
    start = torch.tensor(artifact.response_start_ids, dtype=torch.long)
    assert artifact.threshold is not None

    def classify_hook(_m: nn.Module, _args: Any, output: Any, layer: int) -> None:
        if not state.classifying:
            return
        h = _hidden(output)
        n_start = start.numel()
        state.recorded[layer] = (h[:, -n_start - 1, :].float(), h[:, -1, :].float())

    def stop_hook(_m: nn.Module, _args: Any, _output: Any, layer: int) -> None:
        if state.classifying and layer == state.stop_at:
            raise _StopForward

    def top_pre_hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
        if state.classifying:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise RunError("SCANS steering classifies token ids; call the model with input_ids, not inputs_embeds")
        if ids.shape[1] <= 1:
            return  # a decoding step: the decision of the prompt pass holds
        if any(kwargs.get(k) is not None for k in ("past_key_values", "cache")) and not _empty_cache(kwargs):
            return
        cache_key = None if args else next((k for k in ("cache", "past_key_values") if k in kwargs), None)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = torch.ones_like(ids)
        if not bool(mask[:, -1].all()):
            raise RunError("SCANS steering needs left-padded batches (the prompt must end at the last position)")
        b = ids.shape[0]
        extra = start.to(ids.device).unsqueeze(0).expand(b, -1)
        ids2 = torch.cat([ids, extra], dim=1)
        mask2 = torch.cat([mask, torch.ones_like(extra)], dim=1)
        pos2 = (mask2.cumsum(-1) - 1).clamp(min=0)
        # A generation prefill (use_cache=True, empty cache): the classification pass also fills the
        # KV cache, which is cropped to the prompt minus its last token; the prompt pass then runs on
        # that last token alone (the only prompt position SCANS steers). One pass of prompt + response
        # start instead of two passes, so the classifier costs |response start| + 1 positions.
        reuse = bool(kwargs.get("use_cache")) and cache_key is not None and ids.shape[1] > 1
        cache = _new_cache(module) if reuse else None
        state.classifying, state.recorded = True, {}
        state.stop_at = last if reuse else deepest  # a reused cache needs every layer; never the LM head
        try:
            with torch.no_grad():
                if reuse:
                    module(input_ids=ids2, attention_mask=mask2, position_ids=pos2, use_cache=True, **{cache_key: cache})
                else:
                    module(input_ids=ids2, attention_mask=mask2, position_ids=pos2, use_cache=False)
        except _StopForward:
            pass
        finally:
            state.classifying = False
        cos = torch.stack([
            transition_cosine(*state.recorded[layer], tensors[f"reference.{layer}"]) for layer in classify
        ]).mean(0)
        state.harmful = cos >= float(artifact.threshold)  # type: ignore[arg-type]
        state.cosines += cos.tolist()
        state.decisions += state.harmful.tolist()
        if not reuse:
            return None
        state.reused_prefills += 1
        cache.crop(-(start.numel() + 1))  # negative: drop the response start and the last prompt token
        pos = kwargs.get("position_ids")
        if pos is None:
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = dict(kwargs, input_ids=ids[:, -1:], attention_mask=mask, position_ids=pos[:, -1:], **{cache_key: cache})
        return (), kwargs

    for layer in classify:
        handles.append(blocks[layer].register_forward_hook(lambda m, a, o, layer=layer: classify_hook(m, a, o, layer)))
    for layer in sorted({deepest, last}):  # registered after the classify hooks, so those run first
        handles.append(blocks[layer].register_forward_hook(lambda m, a, o, layer=layer: stop_hook(m, a, o, layer)))
    handles.append(module.register_forward_pre_hook(top_pre_hook, with_kwargs=True))

    for layer in artifact.layers:
        vector = tensors[f"direction.{layer}"]

        def hook(_m: nn.Module, _args: Any, output: Any, vector: torch.Tensor = vector) -> Any:
            if state.classifying:
                return None
            h = _hidden(output)
            if state.harmful is None:
                raise RunError("SCANS hooks saw a decoding step before any prompt pass")
            if state.harmful.shape[0] != h.shape[0]:
                raise RunError(f"SCANS steering lost track of the batch rows ({state.harmful.shape[0]} decisions for {h.shape[0]} rows)")
            state.calls += 1
            sign = torch.where(state.harmful, 1.0, -1.0).to(h.dtype).view(-1, 1)
            h = h.clone()
            h[:, -1, :] = add_vector(h[:, -1, :], vector, s * sign)
            return _replace(output, h)

        handles.append(blocks[layer].register_forward_hook(hook))


def _new_cache(module: nn.Module) -> Any:
    from transformers import DynamicCache

    config = getattr(module, "config", None)
    try:
        return DynamicCache(config=config) if config is not None else DynamicCache()
    except TypeError:  # older transformers: no config argument
        return DynamicCache()


def _empty_cache(kwargs: dict) -> bool:
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if cache is None:
        return True
    length = getattr(cache, "get_seq_length", None)
    return bool(length is not None and length() == 0)
