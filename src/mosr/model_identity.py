"""Identity of a base model: which checkpoint a fingerprint, an adapter's recorded base or a cache key means."""

from __future__ import annotations

import hashlib
from pathlib import Path

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_SAMPLES, _SAMPLE_BYTES = 16, 1 << 16


def local_fingerprint(folder: Path) -> str:
    """Identity of a local model folder: its config, tokenizer files and weights.

    Two checkpoints of one architecture share a config, so the weight files count too. Each one is
    identified by its name, size and ``_SAMPLES`` evenly spaced 64 KiB samples (first and last bytes
    included): fast on a 16 GB checkpoint, and different for any fine-tuned copy, whose weights change
    almost everywhere. ``local-config-sha256:<config hash>`` starts it, as before weights counted.
    """
    h = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and (p.suffix in _WEIGHT_SUFFIXES or p.name.startswith("tokenizer")
                                                                       or p.name in ("special_tokens_map.json", "chat_template.jinja"))):
        size = path.stat().st_size
        h.update(f"{path.name}\0{size}\0".encode())
        with open(path, "rb") as fh:
            for i in range(_SAMPLES):
                fh.seek(max(0, (size - _SAMPLE_BYTES) * i // (_SAMPLES - 1)))
                h.update(fh.read(_SAMPLE_BYTES))
    config = hashlib.sha256((folder / "config.json").read_bytes()).hexdigest()
    return f"local-config-sha256:{config};files-sampled-sha256:{h.hexdigest()}"


def same_base(recorded: str, fingerprint: str) -> bool:
    """An adapter recorded before weights counted (config hash only) is checked on the config hash."""
    return recorded == fingerprint or (";" not in recorded and fingerprint.split(";")[0] == recorded)
