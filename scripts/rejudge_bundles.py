#!/usr/bin/env python3
"""Judge eval bundles again with the current default judge (or ``--judge``), in place, from their stored completions.

Every folder below the given roots that holds an eval bundle (``bundle.json`` with kind ``eval``) is
unpacked into ``--work/<its path>``, judged (``mosr judge``, nothing generated) and bundled again in
the same folder. Files kept next to a bundle that the bundle does not list (``losses.csv``,
``train-run.json``) are moved aside while it is read (a bundle opens only with the files it lists)
and put back unchanged. A bundle already judged with the current
rules (``judge_rules`` in its metrics equal to ``mosr.judges.rules_fingerprint()``) is skipped, so an
interrupted pass resumes.

    python scripts/rejudge_bundles.py results/test-chosen-2026-12-05 results/ood-2026-12-06

Prints one line per bundle: the verdicts and harm flags that changed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from mosr.cli import main as mosr
from mosr.judges import rules_fingerprint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rejudge_diff import read_judged  # noqa: E402


def _mosr(*argv: str) -> None:
    """One mosr command in this process; a failure stops the pass before the bundle is replaced."""
    if mosr(list(argv)) != 0:
        raise SystemExit(f"mosr {' '.join(argv)} failed")


def _eval_bundles(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        for meta in sorted(root.rglob("bundle.json")):
            if json.loads(meta.read_text(encoding="utf-8")).get("kind") == "eval":
                found.append(meta.parent)
    return found


def _state(folder: Path) -> tuple[dict[str, tuple], str | None]:
    """Each judgment's (verdict, harm flag) by key, and the rules version that judged the bundle."""
    judgments, metrics = read_judged(folder)
    return {k: (j["verdict"], j.get("harmful")) for k, j in judgments.items()}, metrics.get("judge_rules")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roots", nargs="+", type=Path)
    ap.add_argument("--work", type=Path, default=Path("runs/rejudge-bundles"), help="where the bundles are unpacked")
    ap.add_argument("--judge", default="default", help="the judge to use (default: the default judge)")
    args = ap.parse_args(argv)
    rules = rules_fingerprint()
    bundles = _eval_bundles(args.roots)
    if not bundles:
        print(f"no eval bundles below {', '.join(map(str, args.roots))}", file=sys.stderr)
        return 1
    for bundle in bundles:
        listed = {f["stored"] for f in json.loads((bundle / "bundle.json").read_text(encoding="utf-8"))["files"]} | {"bundle.json"}
        rel = Path(*bundle.parts[1:]) if bundle.is_absolute() else bundle  # under --work, even for an absolute path
        aside = args.work / "_kept_beside" / rel  # a bundle opens only with the files it lists
        extras = [f for f in bundle.iterdir() if f.name not in listed]
        aside.mkdir(parents=True, exist_ok=True)
        for extra in extras:
            shutil.move(str(extra), aside / extra.name)
        try:
            old, old_rules = _state(bundle)
            if old_rules == rules:
                print(f"{bundle}: already judged with rules {rules}, skipped")
                continue
            work = args.work / rel
            shutil.rmtree(work, ignore_errors=True)
            _mosr("bundle", str(bundle), "--unpack", "--out", str(work))
            _mosr("judge", str(work), "--judge", args.judge)
            fresh = bundle.with_name(bundle.name + ".rejudged")
            shutil.rmtree(fresh, ignore_errors=True)
            _mosr("bundle", str(work), "--out", str(fresh))
            shutil.rmtree(bundle)
            fresh.rename(bundle)
            new, _ = _state(bundle)
        finally:  # the files kept beside the bundle go back, whatever happened
            for extra in extras:
                shutil.move(str(aside / extra.name), bundle / extra.name)
        verdicts = sum(old[k][0] != new[k][0] for k in old)
        flags = sum(old[k][1] != new[k][1] for k in old)
        print(f"{bundle}: {len(old)} judgments, {verdicts} verdicts and {flags} harm flags changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
