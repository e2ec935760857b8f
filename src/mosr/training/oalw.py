"""Overlap-Aware Loss Weighting (METHOD §5): erase weights from similarity to pseudo-malicious samples.

Pure functions over fixed features. The features are computed once, before training, from the
reference model (see :func:`mosr.training.trainer.oalw_features`).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Pooling = Literal["last_prompt", "mean_prompt", "mean_all"]
SimilarityKind = Literal["knn", "centroid", "max"]
Sign = Literal["less", "more"]


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, n_prompt: torch.Tensor, how: Pooling) -> torch.Tensor:
    """Pool ``[B, S, D]`` hidden states of right-padded rows into ``[B, D]``.

    ``last_prompt`` is the position right before the answer (``n_prompt − 1``); ``mean_prompt``
    averages the prompt tokens; ``mean_all`` averages every non-padding token.
    """
    b, s, _ = hidden.shape
    pos = torch.arange(s, device=hidden.device).unsqueeze(0).expand(b, s)
    if how == "last_prompt":
        return hidden[torch.arange(b, device=hidden.device), (n_prompt - 1).clamp(min=0)]
    if how == "mean_prompt":
        m = (pos < n_prompt.unsqueeze(1)) & attention_mask.bool()
    elif how == "mean_all":
        m = attention_mask.bool()
    else:
        raise ValueError(f"unknown pooling {how!r}; use last_prompt, mean_prompt or mean_all")
    mf = m.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mf).sum(1) / mf.sum(1).clamp(min=1)


def similarity(malicious: torch.Tensor, pseudo: torch.Tensor, kind: SimilarityKind = "knn", k: int = 8) -> torch.Tensor:
    """``s_i`` for each malicious feature row: cosine to the pseudo-malicious set.

    ``knn``: mean cosine to the ``k`` nearest pseudo-malicious rows (``k`` is capped at their number);
    ``centroid``: cosine to the mean of the L2-normalised pseudo-malicious rows; ``max``: the highest cosine.
    """
    a = F.normalize(malicious.double(), dim=-1)
    b = F.normalize(pseudo.double(), dim=-1)
    if kind == "centroid":
        return (a @ F.normalize(b.mean(0), dim=-1)).to(malicious.dtype)
    sims = a @ b.T  # [N, M]
    if kind == "max":
        return sims.max(dim=1).values.to(malicious.dtype)
    if kind == "knn":
        kk = max(1, min(k, sims.shape[1]))
        return sims.topk(kk, dim=1).values.mean(dim=1).to(malicious.dtype)
    raise ValueError(f"unknown similarity {kind!r}; use knn, centroid or max")


def weights(sim: torch.Tensor, tau: float, sign: Sign = "less") -> torch.Tensor:
    """``w_i = N·softmax(−s_i/τ)`` (``sign="less"``: overlap is erased less) or ``N·softmax(+s_i/τ)`` (``"more"``).

    The weights are positive and have mean exactly 1.
    """
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    direction = {"less": -1.0, "more": 1.0}.get(sign)
    if direction is None:
        raise ValueError(f"sign must be 'less' or 'more', got {sign!r}")
    n = sim.numel()
    return n * torch.softmax(direction * sim.double() / tau, dim=0).to(sim.dtype if sim.is_floating_point() else torch.float32)


def shuffled(w: torch.Tensor, seed: int) -> torch.Tensor:
    """``w`` permuted with a seeded generator: the OALW control with the same weights but no link to overlap."""
    gen = torch.Generator().manual_seed(seed)
    return w[torch.randperm(w.numel(), generator=gen)]
