"""Pure tensor functions of the three steering methods (no model, no hooks), tested on fixed tensors.

Row-vector convention: activations are ``[..., d]``; a steering matrix ``M`` acts as ``h @ M``.
"""

from __future__ import annotations

import torch


def diff_of_means(harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """``mean(harmful) - mean(benign)`` over rows: the refusal direction of Arditi et al. and SCANS."""
    return harmful.double().mean(0).sub(benign.double().mean(0)).float()


def unit(v: torch.Tensor) -> torch.Tensor:
    norm = v.norm()
    if norm == 0:
        raise ValueError("cannot normalise a zero vector")
    return v / norm


def project_out(h: torch.Tensor, direction: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``h - scale * (h . r) r`` with ``r`` the unit direction: directional ablation at ``scale`` 1."""
    r = unit(direction.to(h.dtype))
    return h - scale * (h @ r).unsqueeze(-1) * r


def add_vector(h: torch.Tensor, vector: torch.Tensor, scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """``h + scale * v`` (activation addition); ``scale`` may be a per-row ``[batch, 1, 1]`` tensor."""
    return h + scale * vector.to(h.dtype)


def null_space_projector(benign: torch.Tensor, ratio: float) -> torch.Tensor:
    """Projector ``P = Q Q^T`` onto the ``round(ratio * d)`` least-used directions of ``benign`` ``[n, d]``.

    ``Q`` holds the eigenvectors of ``H^T H`` with the smallest eigenvalues (AlphaSteer's null space
    with an absolute ratio). When ``n + round(ratio * d) <= d`` they lie in the exact null space, and
    ``h @ P = 0`` for every row ``h`` of ``benign``.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"null-space ratio must be in (0, 1), got {ratio}")
    h = benign.double()
    d = h.shape[1]
    k = max(1, int(round(ratio * d)))
    _, vecs = torch.linalg.eigh(h.T @ h)  # ascending eigenvalues
    q = vecs[:, :k]
    return (q @ q.T).float()


def alphasteer_matrix(harmful: torch.Tensor, projector: torch.Tensor, target: torch.Tensor, reg: float) -> torch.Tensor:
    """Steering matrix ``Delta = P Delta~`` with ``Delta~`` the ridge solution of ``H_h P Delta~ ~ 1 r^T``.

    ``Delta~ = (X^T X + lam P^T P)^+ X^T (1 r^T)`` with ``X = H_h P``, so a harmful activation ``h``
    maps to ``h @ Delta ~ r`` while any ``h`` with ``h @ P = 0`` (benign) maps to 0. ``reg`` is
    relative: ``lam = reg * trace(X^T X) / d``, which makes it independent of the activation scale.
    """
    if reg < 0:
        raise ValueError(f"regularisation must be >= 0, got {reg}")
    p = projector.double()
    x = harmful.double() @ p
    d = x.shape[1]
    lam = reg * float(torch.trace(x.T @ x)) / d
    a = x.T @ x + lam * (p.T @ p)
    b = x.T @ target.double().expand(x.shape[0], d)
    delta = torch.linalg.pinv(a, hermitian=True) @ b
    return (p @ delta).float()


def alphasteer_shift(h_last: torch.Tensor, matrix: torch.Tensor, strength: float) -> torch.Tensor:
    """``strength * h_last @ Delta``: the vector AlphaSteer adds, from the last prompt token's state."""
    return strength * (h_last @ matrix.to(h_last.dtype))


def transition_cosine(s1: torch.Tensor, s2: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """SCANS' classifier feature: cosine of the transition ``s1 - s2`` with the harmful reference transition.

    ``s1`` is the state at the end of the prompt, ``s2`` the state after a compliant response start
    ("Sure"); shapes ``[batch, d]`` and ``[d]``; returns ``[batch]``.
    """
    v = (s1 - s2).float()
    return torch.nan_to_num(torch.nn.functional.cosine_similarity(v, reference.float().unsqueeze(0), dim=-1))


def best_threshold(scores_harmful: torch.Tensor, scores_benign: torch.Tensor) -> tuple[float, float]:
    """Threshold on ``score >= t -> harmful`` with the best balanced accuracy (ties: the middle one).

    Candidates are midpoints between consecutive distinct scores. Returns (threshold, balanced accuracy).
    """
    allv = torch.cat([scores_harmful, scores_benign]).double().unique(sorted=True)
    if allv.numel() == 1:
        return float(allv[0]), 0.5
    cands = torch.cat([allv[:1] - 1e-6, (allv[1:] + allv[:-1]) / 2, allv[-1:] + 1e-6])
    tpr = (scores_harmful.double().unsqueeze(0) >= cands.unsqueeze(1)).double().mean(1)
    tnr = (scores_benign.double().unsqueeze(0) < cands.unsqueeze(1)).double().mean(1)
    bacc = (tpr + tnr) / 2
    best = bacc.max()
    idx = (bacc == best).nonzero().flatten()
    pick = int(idx[len(idx) // 2])
    return float(cands[pick]), float(best)
