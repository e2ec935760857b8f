"""The tensors of one training step and the module that runs its forward passes.

:class:`StepInputs` holds the padded rows and masks of a step (built by
:meth:`mosr.training.trainer.Trainer.make_inputs`); :class:`StepModule` runs the LoRA policy and
the frozen reference on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mosr.training import losses
from mosr.training.model import backbone, hidden_at, output_head


# ------------------------------------------------------------------------------------------ encoding
@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    n_prompt: int


@dataclass
class StepInputs:
    """Tensors of one step. ``rep_*`` rows are erase rows first, then retain rows."""

    rep_ids: torch.Tensor | None = None
    rep_mask: torch.Tensor | None = None
    erase_mask: torch.Tensor | None = None  # [B_e, S] tokens in the erase loss
    retain_mask: torch.Tensor | None = None  # [B_r, S] tokens in the retain loss
    erase_weights: torch.Tensor | None = None  # [B_e] OALW weights
    sep_mask: torch.Tensor | None = None  # [B_b, S] boundary-safe prompt tokens of the separation term (last B_b rep rows)
    anchor_mask: torch.Tensor | None = None  # [B_b, S] tokens whose reference states give the separation anchor
    ce_ids: torch.Tensor | None = None
    ce_mask: torch.Tensor | None = None
    ce_positions: torch.Tensor | None = None  # [B_c, S] bool: logits taken here
    ce_targets: torch.Tensor | None = None  # [N]
    ce_groups: torch.Tensor | None = None  # [N] REFUSAL, BENIGN or COMPLIANCE
    ce_weights: torch.Tensor | None = None  # [N] per-token weight (the row's OALW weight with oalw_on_refusal, else 1)
    n_tokens: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device) -> StepInputs:
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


def _pad(rows: list[list[int]], pad_id: int, fill: int | None = None) -> torch.Tensor:
    width = max(len(r) for r in rows)
    value = pad_id if fill is None else fill
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


def _scope_mask(rows: list[Encoded], width: int, scope: str, skip_first: bool = False, shared_prefix: int = 0) -> torch.Tensor:
    """``[B, width]`` tokens that enter a representation loss.

    ``all``: every token; ``content``: all but the first ``shared_prefix`` tokens (the chat-template
    prefix that every prompt shares); ``response``: the response only; ``response_and_last_prompt``:
    the response and the last prompt token. ``skip_first`` also drops position 0 (attention sink).
    """
    m = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        start = 0
        if scope == "response":
            start = r.n_prompt  # no token when max_length cut the whole response off
        elif scope == "response_and_last_prompt":
            start = max(min(r.n_prompt, len(r.ids)) - 1, 0)
        elif scope == "content":
            start = min(shared_prefix, max(r.n_prompt - 1, 0))
        m[i, max(start, int(skip_first)) : len(r.ids)] = 1
    return m


def _prompt_mask(rows: list[Encoded], width: int, shared_prefix: int, skip_first: bool) -> torch.Tensor:
    """``[B, width]`` prompt tokens after the shared chat-template prefix (the X-Boundary separation tokens)."""
    m = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        start = max(min(shared_prefix, max(r.n_prompt - 1, 0)), int(skip_first))
        m[i, start : r.n_prompt] = 1
    return m


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode (no dropout) inside the block; restore its train/eval mode on exit.

    The reference passes (adapter disabled) must be the deterministic base model even while the
    policy trains with dropout.
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _answer_labels(e: Encoded) -> list[int]:
    """Labels on the answer tokens only (prompt masked)."""
    return [losses.IGNORE_INDEX] * e.n_prompt + e.ids[e.n_prompt :]


def _first_target(labels: list[int]) -> int:
    """Index of the first trained token of a row (the start of the refusal after prompt and prefix)."""
    return next((i for i, t in enumerate(labels) if t != losses.IGNORE_INDEX), len(labels))


# ------------------------------------------------------------------------------------------ forward
class StepModule(nn.Module):
    """The forward passes of one step; wraps the peft model so that DDP sees a single forward."""

    def __init__(self, model: nn.Module, target_layers: list[int], truncate: bool) -> None:
        super().__init__()
        self.model = model
        self.target_layers = list(target_layers)
        self.truncate = truncate

    def forward(self, inputs: StepInputs) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if inputs.rep_ids is not None:
            out["h_policy"] = hidden_at(self.model, inputs.rep_ids, inputs.rep_mask, self.target_layers, truncate=self.truncate)
            with torch.no_grad(), self.model.disable_adapter(), eval_mode(self.model):
                out["h_ref"] = hidden_at(self.model, inputs.rep_ids, inputs.rep_mask, self.target_layers, truncate=self.truncate)
        if inputs.ce_ids is not None:
            last = backbone(self.model)(input_ids=inputs.ce_ids, attention_mask=inputs.ce_mask, use_cache=False).last_hidden_state
            out["logits"] = output_head(self.model)(last[inputs.ce_positions])
        return out
