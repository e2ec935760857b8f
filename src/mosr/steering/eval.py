"""Glue for ``mosr eval --steering RUN``: load the artifact, check it fits the loaded model."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, ContextManager

from mosr.errors import ConfigError
from mosr.models import LoadedModel
from mosr.representations import adapter_digest
from mosr.steering.artifact import SteeringArtifact
from mosr.steering.hooks import steer


def check_fits(artifact: SteeringArtifact, loaded: LoadedModel, where: str = "") -> None:
    """The artifact must come from the same base model and the same adapter weights as ``loaded``."""
    meta = artifact.model
    if meta.get("fingerprint") and meta["fingerprint"] != loaded.fingerprint:
        raise ConfigError(f"steering run {where} was extracted from model {meta.get('spec')!r} ({meta['fingerprint']}), "
                          f"not {loaded.spec!r}; evaluate with --model {meta.get('spec')}")
    if meta.get("adapter_digest") != adapter_digest(loaded.adapter):
        want = meta.get("adapter")
        raise ConfigError(f"steering run {where} was extracted with adapter {want!r}, but the model has adapter "
                          f"{loaded.adapter!r}; " + (f"add --adapter {want}" if want else "drop --adapter"))


def steering_for_eval(folder: str | None, loaded: LoadedModel) -> tuple[Callable[[LoadedModel], ContextManager[Any]], dict[str, Any] | None]:
    """A context factory for the generation step (a no-op without ``folder``) and the run.json record."""
    if not folder:
        return (lambda _loaded: contextlib.nullcontext()), None
    from mosr.models import file_sha256
    from mosr.steering.artifact import CONFIG_FILE, TENSORS_FILE

    artifact = SteeringArtifact.load(folder)
    check_fits(artifact, loaded, folder)
    meta = {"run": str(folder), **artifact.describe(),
            "sha256": {name: file_sha256(f"{folder}/{name}") for name in (CONFIG_FILE, TENSORS_FILE)}}
    return (lambda ld: steer(ld, artifact)), meta
