"""Copy the default model's own completions from a mosr cache into the package (gzipped).

    MOSR_SHIPPED_COMPLETIONS=0 MOSR_CACHE=/tmp/fresh-cache mosr quickstart --out runs/quickstart
    python scripts/ship_own_completions.py /tmp/fresh-cache

Only files written by generation (not copies of shipped ones) of the embedded default model are
copied, to ``src/mosr/datafiles/own_completions/<model key>/`` (see its SOURCE.md).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mosr.training.data import SHIPPED_COMPLETIONS, model_key  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cache", type=Path, help="a MOSR_CACHE folder whose completions/ were generated")
    ap.add_argument("--fingerprint", help="model fingerprint to ship (default: the embedded default model's)")
    args = ap.parse_args()
    fingerprint = args.fingerprint
    if fingerprint is None:
        from mosr.models import default_gguf_path, gguf_fingerprint

        fingerprint = gguf_fingerprint(default_gguf_path())
    key = model_key(fingerprint)
    src = args.cache / "completions" / key
    if not src.is_dir():
        sys.exit(f"no completions of {fingerprint} in {src}")
    out = SHIPPED_COMPLETIONS / key
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(src.glob("*.json")):
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("source", "generated") != "generated" or payload.get("fingerprint") != fingerprint:
            print(f"skipped {path.name} (source {payload.get('source')!r})")
            continue
        payload.pop("source", None)
        raw = json.dumps(payload, ensure_ascii=False, indent=0).encode("utf-8")
        (out / f"{path.name}.gz").write_bytes(gzip.compress(raw, mtime=0))
        print(f"{out / path.name}.gz: {len(payload['items'])} completions")


if __name__ == "__main__":
    main()
