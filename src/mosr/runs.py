"""Self-describing run directories.

Every command that produces results writes into a folder chosen by the user. Next to the results go
``run.json`` (command, config, seed, package versions, git revision, machine, data hashes) so that a
run can be understood, re-judged and reproduced later. Files are written atomically (temp file +
rename), and line-oriented results are appended to JSONL so an interrupted run loses nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

from mosr.errors import MosrError, RunError

LOCK_FILE = ".mosr.lock"
_HELD: set[str] = set()  # lock files this process holds
_PACKAGES = ("mosr", "torch", "transformers", "peft", "accelerate", "numpy", "scikit-learn", "gguf", "safetensors")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_revision() -> dict[str, Any]:
    """Revision of the mosr source tree (None when installed without git)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return {"revision": None}
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10
        )
        return {"revision": rev.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None}


def machine_info() -> dict[str, Any]:
    import torch

    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default)


class RunDir:
    """A results folder. Creating one checks early that it is writable."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if create:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
                # one probe name per process: ranks of a distributed run share the folder
                probe = self.path / f".write-test-{os.getpid()}"
                probe.write_text("ok")
                probe.unlink(missing_ok=True)
            except OSError as exc:
                raise RunError(f"cannot write to output folder {self.path}: {exc.strerror or exc}") from exc
        elif not self.path.is_dir():
            raise RunError(f"run folder not found: {self.path}")

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------ json
    def write_json(self, name: str, obj: Any) -> Path:
        path = self.path / name
        try:
            atomic_write_text(path, dumps(obj) + "\n")
        except OSError as exc:
            raise RunError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    def read_json(self, name: str) -> Any:
        path = self.path / name
        if not path.is_file():
            raise RunError(f"{path} not found; is {self.path} a mosr run folder?")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunError(f"{path} is not valid JSON ({exc}); the folder was damaged, use another --out") from exc

    # ------------------------------------------------------------------ lock
    @contextlib.contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the folder while a command writes into it; a second command on the same folder is refused.

        The lock (``flock`` on ``.mosr.lock``) belongs to the open file, so a killed process releases
        it at once and no stale lock is left behind. Re-entrant within one process.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - no flock on this platform: no lock
            yield
            return
        path = self.path / LOCK_FILE
        key = str(path.resolve())
        if key in _HELD:
            yield
            return
        fh = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            owner = fh.read().strip() or "another process"
            fh.close()
            raise RunError(f"{self.path} is in use by another mosr command ({owner}); wait for it to finish or use another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{command}, pid {os.getpid()}\n")
        fh.flush()
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            fcntl.flock(fh, fcntl.LOCK_UN)
            fh.close()

    def write_text(self, name: str, text: str) -> Path:
        path = self.path / name
        try:
            atomic_write_text(path, text)
        except OSError as exc:
            raise RunError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    # ----------------------------------------------------------------- jsonl
    def append_jsonl(self, name: str, records: Iterable[dict[str, Any]]) -> None:
        path = self.path / name
        try:
            with open(path, "a", encoding="utf-8") as fh:
                for rec in records:
                    fh.write(json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            raise RunError(f"cannot append to {path}: {exc.strerror or exc}") from exc

    def read_jsonl(self, name: str) -> list[dict[str, Any]]:
        return list(iter_jsonl(self.path / name))

    # -------------------------------------------------------------- metadata
    def write_metadata(
        self, *, command: str, config: dict[str, Any], seed: int | None = None, data_hashes: dict[str, str] | None = None,
        model: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
    ) -> Path:
        meta = {
            "command": command,
            "argv": sys.argv,
            "created": now_iso(),
            "config": config,
            "seed": seed,
            "model": model,
            "data_hashes": data_hashes or {},
            "versions": package_versions(),
            "git": git_revision(),
            "machine": machine_info(),
            **(extra or {}),
        }
        return self.write_json("run.json", meta)


def read_json_file(path: Path, error: type[MosrError], remedy: str) -> Any:
    """The JSON in ``path``; a damaged file raises ``error`` with ``remedy`` (what the user can do)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error(f"{path} cannot be read ({exc}); {remedy}") from exc
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise error(f"{path} is not valid JSON ({exc}); {remedy}") from exc


def run_kind(folder: str | os.PathLike[str]) -> str | None:
    """The command whose ``run.json`` is in ``folder`` (``eval``, ``train``, ``analyze``, ``experiment``), or None."""
    path = Path(folder) / "run.json"
    if not path.is_file():
        return None
    meta = read_json_file(path, RunError, "the folder was damaged, use another --out")
    command = meta.get("command") if isinstance(meta, dict) else None
    return str(command).split()[-1] if isinstance(command, str) and command.strip() else "unknown"


def check_run_kind(folder: str | os.PathLike[str], kind: str) -> None:
    """Refuse to write a ``kind`` run into a folder that holds a run of another command."""
    found = run_kind(folder)
    if found is not None and found != kind:
        raise RunError(f"{folder} holds a `mosr {found}` run; `mosr {kind}` would overwrite its run.json: use another --out")


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Read JSONL, tolerating only a torn last line (an interrupted append)."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                return  # the last write was interrupted; that record is redone
            raise RunError(f"{path}: line {i + 1} is not valid JSON ({exc.msg})") from exc


def repair_jsonl(path: Path) -> None:
    """Cut a torn last line (no trailing newline) so that appends start on a fresh line."""
    if not path.is_file():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as fh:
            fh.truncate(cut)


@contextlib.contextmanager
def disk_errors(where: Path) -> Iterator[None]:
    """Turn a full disk or an unwritable folder into a :class:`RunError` that says what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise RunError(f"no space left on the device while writing {where}; free some space (or use another --out) "
                           "and rerun the same command: finished stages are kept") from exc
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            raise RunError(f"cannot write {exc.filename or where}: {exc.strerror}; choose a writable --out") from exc
        raise
