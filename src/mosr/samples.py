"""The unit of every dataset: a prompt with its ground-truth intent, and a content hash of a list of them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Label = Literal["benign", "harmful"]


@dataclass(frozen=True)
class Sample:
    """One prompt with its ground-truth intent.

    ``label`` is the intent of the prompt: pseudo-malicious prompts (benign but scary-looking) are
    ``benign``. ``reference`` is an optional reference response (benign answer or harmful
    completion, depending on the set).
    """

    id: str
    prompt: str
    label: Label
    source: str
    category: str | None = None
    reference: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def samples_hash(samples: Iterable[Sample]) -> str:
    """Stable content hash of a sample list (id, prompt, label, reference)."""
    digest = hashlib.sha256()
    for s in samples:
        digest.update(json.dumps([s.id, s.prompt, s.label, s.reference], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
