"""The leak check: exact and near-duplicate prompts between training and evaluation data."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from mosr.errors import DataError
from mosr.samples import Sample


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[^\w\s]", " ", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Leak:
    a_id: str
    b_id: str
    kind: Literal["exact", "near"]
    similarity: float
    a_prompt: str
    b_prompt: str


def find_leaks(a: Sequence[Sample], b: Sequence[Sample], *, threshold: float = 0.85) -> list[Leak]:
    """Exact (after normalisation) and near-duplicate prompt pairs between two sample lists.

    Near duplicates: cosine similarity of character 3-5-gram TF-IDF vectors at or above
    ``threshold``. Identical ids with identical prompts count as exact leaks too.
    """
    if not a or not b:
        return []
    leaks: list[Leak] = []
    norm_b: dict[str, list[int]] = {}
    for j, s in enumerate(b):
        norm_b.setdefault(normalise(s.prompt), []).append(j)
    exact_pairs = set()
    for i, s in enumerate(a):
        for j in norm_b.get(normalise(s.prompt), []):
            exact_pairs.add((i, j))
            leaks.append(Leak(s.id, b[j].id, "exact", 1.0, s.prompt, b[j].prompt))
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1, sublinear_tf=True)
    vec.fit([normalise(s.prompt) for s in list(a) + list(b)])
    xa = vec.transform([normalise(s.prompt) for s in a])
    xb = vec.transform([normalise(s.prompt) for s in b])
    sim = (xa @ xb.T).tocoo()
    for i, j, v in zip(sim.row, sim.col, sim.data):
        if v >= threshold and (i, j) not in exact_pairs:
            leaks.append(Leak(a[i].id, b[j].id, "near", float(v), a[i].prompt, b[j].prompt))
    return leaks


def drop_leaks(train: Sequence[Sample], evals: Sequence[Sample], *, threshold: float = 0.85) -> tuple[list[Sample], list[Leak]]:
    """Remove from ``train`` every sample that leaks into ``evals``; return the kept samples and the leaks."""
    leaks = find_leaks(train, evals, threshold=threshold)
    bad = {leak.a_id for leak in leaks}
    return [s for s in train if s.id not in bad], leaks


def assert_no_leaks(train: Sequence[Sample], evals: Sequence[Sample], *, threshold: float = 0.85, what: str = "training data") -> None:
    leaks = find_leaks(train, evals, threshold=threshold)
    if leaks:
        first = leaks[0]
        raise DataError(
            f"{len(leaks)} {what} prompt(s) leak into evaluation data, e.g. {first.a_id} ~ {first.b_id} "
            f"({first.kind}, similarity {first.similarity:.2f}): {first.a_prompt[:80]!r}"
        )
