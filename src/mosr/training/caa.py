"""Context-Aware Augmentation (METHOD §5): a harmful prefix ``r[:k]`` followed by a refusal.

The model learns to refuse *after* harmful content has started, so the refusal decision is tied to
the content rather than to scary words in the prompt. Only the refusal tokens are trained; prompt
and prefix are masked out of the cross-entropy.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from mosr.training.losses import IGNORE_INDEX

PrefixUnit = Literal["tokens", "sentences"]
_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+|\n+")


@dataclass(frozen=True)
class CaaRow:
    """One training row: token ids and labels (``IGNORE_INDEX`` where no loss is taken)."""

    input_ids: list[int]
    labels: list[int]
    prefix_tokens: int


def sample_prefix_length(rng: random.Random, n_units: int, *, zero_share: float, max_prefix: int) -> int:
    """``k``: 0 with probability ``zero_share``, else uniform in ``1..min(max_prefix, n_units)``."""
    if n_units <= 0 or rng.random() < zero_share:
        return 0
    return rng.randint(1, min(max_prefix, n_units))


def sentence_ends(text: str) -> list[int]:
    """Character offsets where each sentence (or line) of ``text`` ends."""
    ends = [m.start() for m in _SENTENCE_END.finditer(text) if m.start() > 0]
    if text.strip() and (not ends or ends[-1] < len(text.rstrip())):
        ends.append(len(text.rstrip()))
    return ends


def build_row(prompt_ids: list[int], prefix_ids: list[int], refusal_ids: list[int], *, max_length: int | None = None) -> CaaRow | None:
    """``prompt + prefix + refusal`` with labels on the refusal only.

    If the row is too long the prefix is shortened first; if even prompt + refusal does not fit,
    returns ``None`` (the caller counts and reports such rows).
    """
    if max_length is not None:
        room = max_length - len(prompt_ids) - len(refusal_ids)
        if room < 0:
            return None
        prefix_ids = prefix_ids[:room]
    ids = list(prompt_ids) + list(prefix_ids) + list(refusal_ids)
    labels = [IGNORE_INDEX] * (len(prompt_ids) + len(prefix_ids)) + list(refusal_ids)
    return CaaRow(ids, labels, len(prefix_ids))


def refusal_text(template: str, *, after_prefix: bool) -> str:
    """A refusal that reads naturally either as the whole answer or after a cut-off harmful prefix."""
    return ("\n\n" + template) if after_prefix else template
