"""The ``mosr`` command line: a thin layer that parses, builds a config and calls the library.

Each subcommand lives in ``mosr.commands.<name>`` with ``add_parser(subparsers)`` and
``run(args) -> int``. Any :class:`~mosr.errors.MosrError` becomes a one-line ``error:`` message and
exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import pkgutil
import sys

from mosr import __version__
from mosr.errors import MosrError

import mosr.commands as _commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mosr", description="Diagnose and mitigate over-refusal in LLMs (MOSR).")
    parser.add_argument("--version", action="version", version=f"mosr {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(_commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"mosr.commands.{info.name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    _quiet_libraries()
    from mosr.distributed import shutdown

    try:
        status = int(args.func(args) or 0)
    except MosrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        shutdown(wait=False)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are saved; rerun the same command to resume", file=sys.stderr)
        shutdown(wait=False)
        return 130
    shutdown()
    return status


def _quiet_libraries() -> None:
    """transformers prints loading bars and notices on every load; mosr shows its own progress."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
