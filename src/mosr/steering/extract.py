"""What the methods read from the model: last-prompt-token states and SCANS transitions.

Only ``:train`` splits feed extraction (checked in :class:`mosr.steering.select.SteerConfig`); the
``:val`` splits are read only to choose knobs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mosr.models import LoadedModel, find_layers
from mosr.progress import progress
from mosr.representations import _Encoded, encode, extract, forward_pooled
from mosr.steering.maths import diff_of_means

RESPONSE_START = "Sure"  # SCANS appends a compliant response start and reads the transition to it


def last_token_states(loaded: LoadedModel, prompts: Sequence[str], *, system: str | None = None, batch_size: int = 16,
                      desc: str = "extract") -> torch.Tensor:
    """``h_l`` at the last prompt token for every layer: ``[n, n_layers, d]`` (float32)."""
    reps = extract(loaded, list(prompts), pooling="last", system=system, batch_size=batch_size, desc=desc)
    return torch.from_numpy(reps.vectors.copy())


def response_start_ids(loaded: LoadedModel) -> list[int]:
    return list(loaded.tokenizer(RESPONSE_START, add_special_tokens=False)["input_ids"])


def transition_states(loaded: LoadedModel, prompts: Sequence[str], layers: Sequence[int], *, system: str | None = None,
                      batch_size: int = 16, desc: str = "transitions") -> tuple[torch.Tensor, torch.Tensor]:
    """States at the end of the prompt (``s1``) and after the response start (``s2``): ``[n, len(layers), d]`` each.

    Built from the same token ids that the SCANS hook appends, so training-time and
    inference-time features match.
    """
    tok = loaded.tokenizer
    start = response_start_ids(loaded)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    rows = [encode(tok, p, system=system) for p in prompts]
    long_rows = [_Encoded(r.ids + start, len(r.ids) + len(start)) for r in rows]  # "last" pooling -> last token
    s1, s2 = [], []
    for i in progress(range(0, len(rows), batch_size), desc=desc, unit="batch"):
        s1.append(forward_pooled(loaded.model, rows[i : i + batch_size], layers, "last", pad_id=pad))
        s2.append(forward_pooled(loaded.model, long_rows[i : i + batch_size], layers, "last", pad_id=pad))
    return torch.cat(s1), torch.cat(s2)


def directions(harmful: torch.Tensor, benign: torch.Tensor) -> torch.Tensor:
    """Difference-of-means refusal direction per layer: ``[n_layers, d]``."""
    return torch.stack([diff_of_means(harmful[:, i], benign[:, i]) for i in range(harmful.shape[1])])


def default_layers(loaded: LoadedModel, fractions: Sequence[float]) -> list[int]:
    """Layer indices at the given depth fractions (deduplicated, in order)."""
    n = len(find_layers(loaded.model))
    out: list[int] = []
    for f in fractions:
        idx = min(n - 1, max(0, int(round(f * n))))
        if idx not in out:
            out.append(idx)
    return out


def band(loaded: LoadedModel, lo: float, hi: float) -> list[int]:
    """All layers with depth fraction in ``[lo, hi)`` (at least one)."""
    n = len(find_layers(loaded.model))
    out = [i for i in range(n) if lo <= i / n < hi]
    return out or [min(n - 1, int(lo * n))]
