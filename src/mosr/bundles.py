"""Result bundles: what a train, eval or analyze run found, without its weights, small enough to commit.

A bundle is a folder::

    bundle.json                      kind; the experiment stage (name, hash, inputs) when the run was one;
                                     the run's run.json; every file with its size and sha256
    run.json, metrics.json, ...      small files, copied as they are
    completions.jsonl.gz, ...        JSONL, CSV and JSON over 64 KiB, gzipped (no timestamp: same content, same bytes)

Only the files named in :data:`FILES` for the run's kind go in: never weights (``*.safetensors``,
``checkpoints/``), representation caches or the self-contained HTML pages. :func:`verify_bundle`
checks every file against ``bundle.json`` (a changed, missing or extra file is an error) and
:func:`unpack_bundle` turns a bundle back into a run folder that ``mosr judge``, ``mosr compare`` and
the experiment report read like the original (less the weights and the figures left out).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mosr.errors import RunError
from mosr.runs import atomic_write_bytes, dumps, now_iso, read_json_file, run_kind
from mosr.stages import STAGE_FILE, stage_done

BUNDLE_FILE = "bundle.json"
FORMAT = 1
FILES: dict[str, tuple[str, ...]] = {  # what a bundle of each kind keeps, when the run has it
    "train": ("run.json", "mosr_adapter.json", "adapter_config.json", "losses.csv", "train_data.jsonl"),
    "eval": ("run.json", "eval_config.json", "metrics.json", "summary.md", "completions.jsonl", "judgments.jsonl",
             "perplexity.jsonl"),
    "analyze": ("run.json", "metrics.json", "report.md", "boundary_scores.csv", "pca.png", "curves-compare.png"),
}
REQUIRED = {"train": "mosr_adapter.json", "eval": "metrics.json", "analyze": "metrics.json"}  # written last by each command
GZIP_ABOVE = 64 * 1024


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gzipped(name: str, size: int) -> bool:
    return name.endswith((".jsonl", ".csv")) or (name.endswith(".json") and size > GZIP_ABOVE)


def is_bundle(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / BUNDLE_FILE).is_file()


def _read_json(path: Path) -> Any:
    return read_json_file(path, RunError, "export the bundle (or finish the run) again")


def _stage_info(run: Path) -> dict[str, Any] | None:
    """The experiment stage the folder is (name, kind, hash, inputs), or None for a standalone run."""
    path = run / STAGE_FILE
    if not path.is_file():
        return None
    info = _read_json(path)
    key = info.get("hash")
    if not isinstance(key, str) or not stage_done(run, key):
        raise RunError(f"{run} is an unfinished experiment stage (no DONE with its hash); finish it with `mosr experiment` first")
    return {k: info.get(k) for k in ("name", "kind", "hash", "inputs", "seconds")}


def export_bundle(run: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the bundle of the finished run (or experiment stage) folder ``run`` into ``out``; returns ``out``.

    ``out`` is replaced as a whole, so a reader never sees half a bundle; a folder at ``out`` that is
    not a bundle is refused.
    """
    run, out = Path(run), Path(out)
    if not run.is_dir():
        raise RunError(f"run folder not found: {run}")
    if is_bundle(run):
        raise RunError(f"{run} is already a bundle; copy the folder to move it")
    stage = _stage_info(run)
    kind = stage["kind"] if stage else run_kind(run)
    if kind not in FILES:
        what = f"a `mosr {kind}` run" if kind else "not a mosr run folder (no run.json)"
        raise RunError(f"{run} is {what}; bundles hold train, eval and analyze runs and experiment stages")
    if not (run / REQUIRED[kind]).is_file():
        raise RunError(f"{run} has no {REQUIRED[kind]}: the {kind} run is not finished; finish it before bundling it")
    if out.exists() and not is_bundle(out) and any(out.iterdir()):
        raise RunError(f"{out} exists and is not a bundle; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = []
        for name in FILES[kind]:
            if (run / name).is_file():
                files.append(_store(run / name, tmp))
        meta = _read_json(run / "run.json") if (run / "run.json").is_file() else None
        info = {"format": FORMAT, "kind": kind, "stage": stage, "created": now_iso(), "run": meta, "files": files,
                "size": sum(f["stored_size"] for f in files)}
        atomic_write_bytes(tmp / BUNDLE_FILE, (dumps(info) + "\n").encode())
        _shareable(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _store(src: Path, dest: Path) -> dict[str, Any]:
    data = src.read_bytes()
    stored, blob = src.name, data
    if _gzipped(src.name, len(data)):
        stored, blob = src.name + ".gz", gzip.compress(data, compresslevel=9, mtime=0)
    atomic_write_bytes(dest / stored, blob)
    return {"name": src.name, "stored": stored, "size": len(data), "sha256": _sha256(data),
            "stored_size": len(blob), "stored_sha256": _sha256(blob)}


def _shareable(folder: Path) -> None:
    """Temporary files and folders are private; a bundle is meant to be shared (umask permitting)."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(folder, 0o777 & ~mask)
    for path in folder.iterdir():
        os.chmod(path, 0o666 & ~mask)


def _replace(new: Path, out: Path) -> None:
    """Put the folder ``new`` at ``out``, replacing an old bundle there (rename, then delete the old one)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(new, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_bundle_info(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    """``bundle.json`` of a bundle, unchecked (see :func:`verify_bundle`)."""
    bundle = Path(bundle)
    if not is_bundle(bundle):
        raise RunError(f"{bundle} is not a bundle (no {BUNDLE_FILE})")
    info = _read_json(bundle / BUNDLE_FILE)
    if not isinstance(info, dict) or info.get("format") != FORMAT or info.get("kind") not in FILES:
        raise RunError(f"{bundle / BUNDLE_FILE} is not a format-{FORMAT} bundle of a train, eval or analyze run")
    return info


def verify_bundle(bundle: str | os.PathLike[str]) -> dict[str, Any]:
    """Check every file of ``bundle`` against ``bundle.json``; returns ``bundle.json``. Any difference is a :class:`RunError`."""
    bundle = Path(bundle)
    info = read_bundle_info(bundle)
    allowed = set(FILES[info["kind"]])
    listed = set()
    for f in info.get("files", []):
        name, stored = f.get("name"), f.get("stored")
        if name not in allowed or stored not in (name, f"{name}.gz"):
            raise RunError(f"{bundle}: bundle.json lists {stored!r}, which a {info['kind']} bundle cannot hold")
        path = bundle / stored
        if not path.is_file():
            raise RunError(f"{bundle}: {stored} is missing; restore the bundle (e.g. from git) or export it again")
        data = path.read_bytes()
        if len(data) != f.get("stored_size") or _sha256(data) != f.get("stored_sha256"):
            raise RunError(f"{bundle}: {stored} was changed after export (its sha256 differs from bundle.json); "
                           "restore the bundle (e.g. from git) or export it again")
        listed.add(stored)
    extra = sorted(p.name for p in bundle.iterdir() if p.name not in listed | {BUNDLE_FILE} and not p.name.startswith("."))
    if extra:
        raise RunError(f"{bundle}: {', '.join(extra)} not listed in bundle.json; a bundle holds only the files it lists")
    return info


def _gunzip(data: bytes, *, limit: int, what: str) -> bytes:
    """Decompress gzip ``data`` to at most ``limit`` bytes: a bundle is untrusted input, and a file that
    inflates past the size its ``bundle.json`` records is refused before it fills memory."""
    d = zlib.decompressobj(wbits=31)
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as exc:
        raise RunError(f"{what} is not valid gzip ({exc})") from exc
    if len(out) > limit:
        raise RunError(f"{what} unpacks to more than the {limit} bytes bundle.json records; export the bundle again")
    if not d.eof:
        raise RunError(f"{what} is not valid gzip (truncated)")
    return out


def unpack_bundle(bundle: str | os.PathLike[str], out: str | os.PathLike[str]) -> dict[str, Any]:
    """Verify ``bundle`` and write its files, uncompressed, into the run folder ``out``; returns ``bundle.json``."""
    bundle, out = Path(bundle), Path(out)
    info = verify_bundle(bundle)
    out.mkdir(parents=True, exist_ok=True)
    for f in info["files"]:
        data = (bundle / f["stored"]).read_bytes()
        if f["stored"] != f["name"]:
            data = _gunzip(data, limit=int(f["size"]), what=f"{bundle}: {f['stored']}")
        if len(data) != f["size"] or _sha256(data) != f["sha256"]:
            raise RunError(f"{bundle}: {f['stored']} does not unpack to the file that was exported; export the bundle again")
        atomic_write_bytes(out / f["name"], data)
    return info


@contextlib.contextmanager
def open_run(folder: str | os.PathLike[str]) -> Iterator[Path]:
    """A run folder to read: ``folder`` itself, or a bundle unpacked (verified) into a temporary folder."""
    folder = Path(folder)
    if not is_bundle(folder):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="mosr-bundle-") as tmp:
        unpack_bundle(folder, Path(tmp) / "run")
        yield Path(tmp) / "run"
