"""Loss terms of representation rerouting and MOSR (METHOD §4, §5) as pure tensor functions.

Shapes: hidden states are stacked over target layers as ``[L, B, S, D]``; token masks are
``[B, S]`` (1 = the token counts). ``h_l`` is the residual stream after decoder block ``l``
(``hidden_states[l + 1]`` in transformers).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def schedule(step: int, total_steps: int, alpha: float, span: float = 2.0) -> tuple[float, float]:
    """``(c_ret, c_erase) = (α·t/(sT), α·(1 − t/(sT)))`` for step ``t`` (0-based) of ``T``.

    ``span`` ``s = 2`` is the Circuit Breakers schedule of METHOD §4; the X-Boundary code divides the
    step by a fixed 300 while training 180 steps, i.e. ``s = 5/3``.
    """
    frac = step / (span * total_steps)
    return alpha * frac, alpha * (1.0 - frac)


def ramp(step: int, warmup_steps: int) -> float:
    """Linear warm-up factor ``min(1, t/W)`` for 0-based step ``t`` (1 when ``W = 0``): 0 at the first step."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, step / warmup_steps)


def rep_stats(h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-layer, per-dimension mean and std of ``[L, B, S, D]`` hidden states over the masked tokens.

    Returns ``(mean, std)``, each ``[L, D]`` (float64 accumulation, population std). Used once, before
    training, on the reference model's states, so that :func:`standardize` can remove the
    representation's shared offset and its per-dimension scale (outlier dimensions).
    """
    m = mask.to(torch.float64).unsqueeze(0).unsqueeze(-1)  # [1, B, S, 1]
    x = h.to(torch.float64)
    n = m.sum().clamp(min=1)
    mean = (x * m).sum(dim=(1, 2)) / n  # [L, D]
    var = (((x - mean[:, None, None, :]) ** 2) * m).sum(dim=(1, 2)) / n
    return mean.to(h.dtype), var.sqrt().to(h.dtype)


def standardize(h: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None, *, unit: bool = False, eps: float = 1e-6) -> torch.Tensor:
    """``(h − μ)/σ`` per layer and dimension; ``h`` is ``[L, ..., D]``, ``mean``/``std`` are ``[L, D]``.

    ``unit=True`` also divides by ``√D``, so that a typical token has norm about 1: the retain L2
    distance is then on the same scale as the erase cosine. ``None`` statistics return ``h``
    unchanged (``rep_norm: none``).
    """
    if mean is None or std is None:
        return h
    shape = (mean.shape[0],) + (1,) * (h.dim() - 2) + (mean.shape[1],)
    mu = mean.to(h.dtype).reshape(shape)
    sd = std.to(h.dtype).clamp(min=eps).reshape(shape)
    if unit:
        sd = sd * mean.shape[1] ** 0.5
    return (h - mu) / sd


def retain_loss(h_policy: torch.Tensor, h_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over masked tokens and layers of ``||h_θ − h_ref||_2``."""
    dist = torch.linalg.vector_norm(h_policy - h_ref, dim=-1)  # [L, B, S]
    m = mask.to(dist.dtype).unsqueeze(0).expand_as(dist)
    return (dist * m).sum() / m.sum().clamp(min=1)


def erase_per_sample(h_policy: torch.Tensor, h_ref: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``ℓ_erase(x_i)``: mean over the masked tokens of ``x_i`` and over layers of ``ReLU(cos(h_θ, h_ref))``; shape ``[B]``."""
    cos = F.cosine_similarity(h_policy, h_ref, dim=-1, eps=1e-8)  # [L, B, S]
    m = mask.to(cos.dtype).unsqueeze(0).expand_as(cos)
    per = (F.relu(cos) * m).sum(dim=(0, 2))
    return per / m.sum(dim=(0, 2)).clamp(min=1)


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor, normalize: Literal["global", "batch"]) -> torch.Tensor:
    """``Σ w·v / N`` (``global``) or ``Σ w·v / Σ w`` (``batch``)."""
    w = weights.to(values.dtype)
    if normalize == "batch":
        return (w * values).sum() / w.sum().clamp(min=1e-12)
    if normalize == "global":
        return (w * values).sum() / values.numel()
    raise ValueError(f"normalize must be 'global' or 'batch', got {normalize!r}")


def weighted_erase(per_sample: torch.Tensor, weights: torch.Tensor, normalize: Literal["global", "batch"] = "global") -> torch.Tensor:
    """OALW erase term.

    ``batch``: ``Σ w_i ℓ_i / Σ w_i`` over the batch (the METHOD formula applied to one batch). With
    small batches this re-normalises the weights away (a batch of only low-weight samples is erased
    at full strength), so the default ``global`` uses ``Σ w_i ℓ_i / B``: the weights have mean 1
    over the whole malicious set, so this is an unbiased estimate of the full-set ``Σ w ℓ / Σ w``.
    Unit weights give the plain RR mean either way.
    """
    return _weighted_mean(per_sample, weights, normalize)


def mean_unit(h: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per layer and row, the mean over masked tokens of the unit-normalised states: ``[L, B, S, D]`` -> ``[L, B, D]``.

    Not re-normalised: its norm is below 1 when the tokens point different ways (as in the X-Boundary code).
    """
    unit = h / torch.linalg.vector_norm(h, dim=-1, keepdim=True).clamp(min=eps)
    m = mask.to(h.dtype).unsqueeze(0).unsqueeze(-1)  # [1, B, S, 1]
    return (unit * m).sum(dim=2) / m.sum(dim=2).clamp(min=1)


def separation_per_sample(h_policy: torch.Tensor, anchors: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """X-Boundary separation: per row, mean over masked tokens and layers of ``ReLU(<h_θ/||h_θ||, a>)``; shape ``[B]``.

    ``h_policy`` is ``[L, B, S, D]``, ``anchors`` ``[L, B, D]`` (one anchor per row and layer, e.g.
    :func:`mean_unit` of reference states), ``mask`` ``[B, S]``. Zero once every masked token points
    away from (or orthogonal to) its anchor.
    """
    unit = h_policy / torch.linalg.vector_norm(h_policy, dim=-1, keepdim=True).clamp(min=eps)
    dots = (unit * anchors.to(unit.dtype).unsqueeze(2)).sum(-1)  # [L, B, S]
    m = mask.to(dots.dtype).unsqueeze(0).expand_as(dots)
    return (F.relu(dots) * m).sum(dim=(0, 2)) / m.sum(dim=(0, 2)).clamp(min=1)


def weighted_token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor,
                                 normalize: Literal["global", "batch"] = "global") -> torch.Tensor:
    """Cross-entropy with one weight per target token (the OALW weight of the row it belongs to).

    ``global``: ``Σ w_t·ce_t / N`` (weights with mean 1 keep the scale of the plain mean);
    ``batch``: ``Σ w_t·ce_t / Σ w_t``. Unit weights give :func:`token_cross_entropy` either way.
    """
    if targets.numel() == 0:
        return logits.sum() * 0.0
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return _weighted_mean(ce, weights, normalize)


def token_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the given (already selected) positions; ``[N, V]`` logits, ``[N]`` targets."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), targets, reduction="mean")


def shifted_targets(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions whose next token is a target, and those targets.

    ``labels`` is ``[B, S]`` with :data:`IGNORE_INDEX` on tokens that are not trained (prompt,
    harmful prefix, padding). Returns a ``[B, S]`` boolean mask of positions ``t`` whose logits
    predict ``labels[t + 1]``, and the ``[N]`` targets in row-major order.
    """
    nxt = labels[:, 1:]
    keep = nxt != IGNORE_INDEX
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = keep
    return mask, nxt[keep]


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Reference implementation: standard causal-LM loss on full ``[B, S, V]`` logits (used in tests)."""
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX)


def combine(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """``Σ weights[k]·terms[k]`` over the terms present."""
    total: torch.Tensor | None = None
    for key, value in terms.items():
        part = weights[key] * value
        total = part if total is None else total + part
    if total is None:
        raise ValueError("no loss terms")
    return total
