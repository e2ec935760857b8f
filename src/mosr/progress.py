"""The one progress API of mosr: tqdm bars on stderr, silenced with ``MOSR_PROGRESS=0``."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("MOSR_PROGRESS", "1") not in {"0", "false", "no"}


def progress(iterable: Iterable[T] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", **kwargs: Any) -> Any:
    """A progress bar (or a silent pass-through when disabled)."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled(), dynamic_ncols=True, leave=False, **kwargs)
