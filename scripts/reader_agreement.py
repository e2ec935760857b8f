"""How often two blind readers agree, next to how often the judge agrees with each (docs/JUDGES.md).

Reads a second reading (a JSONL file of ``id``, ``verdict``, ``harmful_content``, ``note``, given with
the same rubric and no judge output or first label shown) of labelled completions, and prints per
source model:

* **reader 2 vs reader 1**: the agreement two readers reach on the same completions, the reference
  for what a judge can reach against one reader;
* **judge vs reader 1**: the published agreement (the first reading's labels stay the scored ones);
* **judge vs reader 2**;
* **judge where the readers agree**: the judge against the labels both readers gave, on those rows.

Each for verdicts (4 classes), the behaviour view on harmful prompts (defended = refusal or gibberish)
and harmful content, with 95% Wilson intervals.

    python scripts/reader_agreement.py results/judge_set/labels_second_reading_10_11.jsonl --judge default \\
        --json results/judge_set/reader-agreement-10-11.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_accuracy import CLASSES, SET_DIR, _jsonl, agreement, fmt, load_set  # noqa: E402

from mosr.errors import ConfigError  # noqa: E402
from mosr.judges import get_judge  # noqa: E402

VERDICTS = CLASSES
COMPARISONS = ("reader 2 vs reader 1", "judge vs reader 1", "judge vs reader 2", "judge where the readers agree on the verdict")


def read_second(path: Path, known: dict[str, dict]) -> dict[str, dict]:
    """The second reading, checked: every id labelled once, known to the set, with valid values."""
    second: dict[str, dict] = {}
    for i, rec in enumerate(_jsonl(path), 1):
        rid = rec.get("id")
        if rid not in known:
            raise ConfigError(f"{path}:{i}: id {rid!r} is not a labelled completion")
        if rid in second:
            raise ConfigError(f"{path}:{i}: id {rid!r} labelled twice")
        if rec.get("verdict") not in VERDICTS:
            raise ConfigError(f"{path}:{i}: verdict {rec.get('verdict')!r} is not one of {VERDICTS}")
        if rec.get("harmful_content") not in (("yes", "no") if known[rid]["kind"] == "harmful" else (None,)):
            raise ConfigError(f"{path}:{i}: harmful_content {rec.get('harmful_content')!r} for a {known[rid]['kind']} request")
        second[rid] = rec
    return second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("second", type=Path, help="the second reading (JSONL: id, verdict, harmful_content, note)")
    ap.add_argument("--judge", default="default")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    everything = {r["id"]: r for r in load_set(SET_DIR, part="all")}
    second = read_second(args.second, everything)
    rows = [everything[i] for i in second]
    first = [(r["label"], r["label_harmful"] == "yes") for r in rows]
    reader2 = [(second[r["id"]]["verdict"], second[r["id"]]["harmful_content"] == "yes") for r in rows]
    js = get_judge(args.judge).judge([r["request"] for r in rows], [r["completion"] for r in rows])
    judge = [(j.verdict, j.harmful is True) for j in js]
    agree = [i for i in range(len(rows)) if first[i][0] == reader2[i][0]]
    report = {
        "second_reading": str(args.second), "judge": args.judge, "n": len(rows),
        "parts": dict(Counter(r["judge_split"] for r in rows)),
        "reader 2 vs reader 1": agreement(rows, reader2, first),
        "judge vs reader 1": agreement(rows, judge, first),
        "judge vs reader 2": agreement(rows, judge, reader2),
        "judge where the readers agree on the verdict": agreement([rows[i] for i in agree], [judge[i] for i in agree], [first[i] for i in agree]),
        "verdict pairs (reader 1 -> reader 2)": dict(Counter(f"{first[i][0]}->{reader2[i][0]}" for i in range(len(rows)) if first[i][0] != reader2[i][0])),
    }
    print(f"{len(rows)} completions read twice ({', '.join(f'{k}: {v}' for k, v in report['parts'].items())}); judge {args.judge}\n")
    for view in ("verdict", "behaviour_harmful", "harmful_content"):
        print(f"\n### {view}\n")
        names = list(COMPARISONS)
        print("| source | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for group in report["reader 2 vs reader 1"]:
            print(f"| {group} | " + " | ".join(fmt(report[n].get(group, {}).get(view)) for n in names) + " |")
    print("\nreader 1 -> reader 2, where they differ:", report["verdict pairs (reader 1 -> reader 2)"])
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
