"""The steering artifact: tensors in safetensors, everything else in JSON, one folder.

A :class:`SteeringArtifact` is a small value object. It holds what one method needs at inference
time (directions, steering matrices, classifier references) for the layers it acts on, plus the
knobs chosen on the validation splits. ``save`` and ``load`` round-trip it exactly; the run
metadata (``run.json``) is written next to it by :func:`mosr.steering.run_steer`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from mosr.errors import ConfigError, RunError

Method = Literal["scans", "refusal-direction", "alphasteer"]
METHODS: tuple[str, ...] = get_args(Method)
Mode = Literal["add", "ablate"]
MODES: tuple[str, ...] = get_args(Mode)

TENSORS_FILE = "steering.safetensors"
CONFIG_FILE = "steering.json"
FORMAT = 1


def _required(method: str, mode: str, layers: tuple[int, ...], classify_layers: tuple[int, ...]) -> list[str]:
    """Names of the tensors a method needs (``direction.L``, ``matrix.L``, ``reference.L``)."""
    if method == "alphasteer":
        return [f"matrix.{layer}" for layer in layers]
    names = [f"direction.{layer}" for layer in layers]
    if method == "scans":
        names += [f"reference.{layer}" for layer in classify_layers]
    return names


@dataclass
class SteeringArtifact:
    """What a steering method applies at inference time, and the knobs chosen for it.

    ``layers`` are decoder-block indices; a hook acts on the output of those blocks (the residual
    stream ``h_l`` of :mod:`mosr.representations`). ``strength`` scales every intervention, and a
    strength of 0 leaves the model exactly as it is.
    """

    method: str
    layers: tuple[int, ...]
    tensors: dict[str, torch.Tensor]
    strength: float = 1.0
    mode: str = "add"  # refusal-direction only: "add" (induce refusal) or "ablate" (remove refusal)
    threshold: float | None = None  # scans: mean transition cosine at or above which a query counts as harmful
    classify_layers: tuple[int, ...] = ()  # scans: layers whose transition cosines are averaged
    response_start_ids: tuple[int, ...] = ()  # scans: tokens appended to the prompt for the transition
    options: dict[str, Any] = field(default_factory=dict)  # method settings kept for the record
    model: dict[str, Any] = field(default_factory=dict)  # spec, fingerprint, adapter and its digest

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown steering method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.mode not in MODES:
            raise ConfigError(f"unknown steering mode {self.mode!r}; choose one of {', '.join(MODES)}")
        if self.mode == "ablate" and self.method != "refusal-direction":
            raise ConfigError("mode 'ablate' exists only for --method refusal-direction")
        if not self.layers:
            raise ConfigError("a steering artifact needs at least one layer")
        if self.strength < 0:
            raise ConfigError(f"strength must be >= 0 (0 = no steering), got {self.strength}")
        self.layers = tuple(int(x) for x in self.layers)
        self.classify_layers = tuple(int(x) for x in self.classify_layers)
        self.response_start_ids = tuple(int(x) for x in self.response_start_ids)
        if self.method == "scans":
            if self.threshold is None or not self.classify_layers or not self.response_start_ids:
                raise ConfigError("a scans artifact needs threshold, classify_layers and response_start_ids")
        missing = [n for n in _required(self.method, self.mode, self.layers, self.classify_layers) if n not in self.tensors]
        if missing:
            raise ConfigError(f"{self.method} artifact is missing tensors {missing[:4]}")

    def with_strength(self, strength: float) -> SteeringArtifact:
        """A copy with another strength (tensors shared, not copied)."""
        return dataclasses.replace(self, strength=float(strength))

    def replace(self, **changes: Any) -> SteeringArtifact:
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary (no tensors), stored in the run.json of runs that use it."""
        return {
            "method": self.method, "mode": self.mode, "layers": list(self.layers), "strength": self.strength,
            "threshold": self.threshold, "classify_layers": list(self.classify_layers),
            "response_start_ids": list(self.response_start_ids), "options": self.options, "model": self.model,
        }

    # ------------------------------------------------------------------------------------ disk
    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write ``steering.safetensors`` and ``steering.json`` into ``folder``."""
        from safetensors.torch import save_file

        from mosr import __version__
        from mosr.runs import atomic_write_text

        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.tensors.items()}
        tmp = path / f".{TENSORS_FILE}.tmp"
        save_file(tensors, str(tmp))
        os.replace(tmp, path / TENSORS_FILE)
        payload = {"format": FORMAT, "mosr": __version__, **self.describe()}
        atomic_write_text(path / CONFIG_FILE, json.dumps(payload, indent=2) + "\n")
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> SteeringArtifact:
        from safetensors.torch import load_file

        path = Path(folder)
        if not (path / CONFIG_FILE).is_file() or not (path / TENSORS_FILE).is_file():
            raise RunError(f"{path} is not a steering run (need {CONFIG_FILE} and {TENSORS_FILE}); make one with `mosr steer --out {path}`")
        meta = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise RunError(f"{path / CONFIG_FILE} has format {meta.get('format')!r}; this mosr reads format {FORMAT}. Re-run mosr steer")
        tensors = load_file(str(path / TENSORS_FILE))
        return cls(
            method=meta["method"], layers=tuple(meta["layers"]), tensors=tensors, strength=float(meta["strength"]),
            mode=meta.get("mode", "add"), threshold=meta.get("threshold"), classify_layers=tuple(meta.get("classify_layers", ())),
            response_start_ids=tuple(meta.get("response_start_ids", ())), options=meta.get("options", {}), model=meta.get("model", {}),
        )


def is_steering_run(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / CONFIG_FILE).is_file()
