#!/usr/bin/env python3
"""Fit the learned coherence check (``src/mosr/judges/coherence.py``) on the hand labels of the scored rounds.

Training rows: the completions of the ``dev`` part of the labelled set (judge-train and the test part
of every scored round; a part still frozen, ``judge_accuracy.FROZEN``, is never read) that the
keyword rules call ``compliance``. Target: the readers' label is ``gibberish``.

C and the threshold are chosen together by cross-validation with one fold per labelled part: for
each setting, the out-of-fold completions it would turn from compliance into gibberish are counted
as **fixes** (labelled gibberish) and **breaks** (labelled compliance); a flip of a row labelled
refusal or partial leaves a wrong verdict wrong. The setting with the most fixes minus breaks wins;
ties go to the higher threshold, then the lower C. The shipped weights are then fitted on all
training rows with that setting.

    python scripts/train_coherence_check.py            # write weights + metadata, print the grid
    python scripts/train_coherence_check.py --no-write # the grid only
    python scripts/train_coherence_check.py --hold-out judge-test-11 --out-dir /tmp/coh  # fit without a part, to score on it
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

import numpy as np
import sklearn
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_accuracy import label_hashes, load_set  # noqa: E402

from mosr.judges import EMBEDDING_NAME, KeywordJudge, LogisticHead, get_embedder  # noqa: E402
from mosr.judges.coherence import COHERENCE_CHEAP_FEATURES, COHERENCE_META, COHERENCE_WEIGHTS, coherence_features  # noqa: E402
from mosr.judges.harm import COMPLETION_TOKENS, REQUEST_TOKENS  # noqa: E402

C_GRID = (0.3, 1.0, 3.0, 10.0)
THRESHOLDS = (0.6, 0.7, 0.8, 0.9, 0.95)


def fit(x: np.ndarray, y: np.ndarray, c: float) -> LogisticHead:
    """Logistic regression on the raw features: the embedding is L2-normalised and the statistics lie in
    [0, 1], and standardising would give each of the 384 embedding dimensions the weight of a statistic."""
    lr = LogisticRegression(C=c, max_iter=5000, class_weight="balanced").fit(x, y)
    n = x.shape[1]
    return LogisticHead(np.zeros(n, np.float32), np.ones(n, np.float32), lr.coef_[0].astype(np.float32), float(lr.intercept_[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--hold-out", metavar="PART", action="append", default=[],
                    help="leave this labelled part out of the fit and the grid (repeatable), to score the fit on it afterwards")
    ap.add_argument("--out-dir", type=Path, help="write the weights and metadata here instead of over the shipped ones")
    args = ap.parse_args(argv)
    rows = load_set(part="dev")
    unknown = sorted(set(args.hold_out) - {r["judge_split"] for r in rows})
    if unknown:
        ap.error(f"--hold-out {', '.join(unknown)}: no such labelled part in dev ({', '.join(sorted({r['judge_split'] for r in rows}))})")
    rows = [r for r in rows if r["judge_split"] not in args.hold_out]
    verdicts = [j.verdict for j in KeywordJudge().judge([r["request"] for r in rows], [r["completion"] for r in rows])]
    rows = [r for r, v in zip(rows, verdicts) if v == "compliance"]
    embedder = get_embedder()
    ec = embedder.embed([r["completion"] for r in rows], max_tokens=COMPLETION_TOKENS, desc="completions")
    er = embedder.embed([r["request"] or "" for r in rows], max_tokens=REQUEST_TOKENS, desc="requests")
    x = coherence_features(ec, er, [r["completion"] for r in rows])
    label = np.asarray([r["label"] for r in rows])
    y = (label == "gibberish").astype(int)
    parts = np.asarray([r["judge_split"] for r in rows])
    sources = np.asarray([r["source"] for r in rows])
    print(f"{len(rows)} completions the keyword rules call compliance, from {len(set(parts))} labelled parts; "
          f"labelled gibberish: {int(y.sum())}, compliance: {int((label == 'compliance').sum())}, other: {int(((label != 'gibberish') & (label != 'compliance')).sum())}")
    grid = {}
    print("\n| C | threshold | fixes | breaks | fixes − breaks | per source (fixes − breaks) |\n|---|---|---|---|---|---|")
    for c in C_GRID:
        proba = np.zeros(len(rows))
        for part in sorted(set(parts)):
            held = parts == part
            proba[held] = fit(x[~held], y[~held], c).proba(x[held])
        for t in THRESHOLDS:
            flip = proba >= t
            fixes, breaks = int((flip & (label == "gibberish")).sum()), int((flip & (label == "compliance")).sum())
            per = {s: int((flip & (sources == s) & (label == "gibberish")).sum()) - int((flip & (sources == s) & (label == "compliance")).sum())
                   for s in sorted(set(sources))}
            grid[f"C={c},threshold={t}"] = {"C": c, "threshold": t, "fixes": fixes, "breaks": breaks, "by_source": per}
            print(f"| {c} | {t} | {fixes} | {breaks} | {fixes - breaks} | " + ", ".join(f"{s} {v:+d}" for s, v in per.items()) + " |")
    chosen = max(grid.values(), key=lambda g: (g["fixes"] - g["breaks"], g["threshold"], -g["C"]))
    print(f"\nchosen: C={chosen['C']}, threshold={chosen['threshold']} (out of fold: {chosen['fixes']} fixes, {chosen['breaks']} breaks)")
    if args.no_write:
        return 0
    out_dir = args.out_dir or COHERENCE_WEIGHTS.parent  # the shipped weights and metadata sit side by side
    out_dir.mkdir(parents=True, exist_ok=True)
    weights_path, meta_path = out_dir / COHERENCE_WEIGHTS.name, out_dir / COHERENCE_META.name
    head = fit(x, y, chosen["C"])
    head.save(weights_path)
    meta = {
        "about": "coherence check: P(gibberish) of a completion the keyword rules call compliance (scripts/train_coherence_check.py)",
        "date": dt.date.today().isoformat(),
        "embedding": {"name": EMBEDDING_NAME, "sha256": embedder.sha256, "dim": int(embedder.model.config.hidden_size),
                      "completion_tokens": COMPLETION_TOKENS, "request_tokens": REQUEST_TOKENS},
        "features": {"cheap": list(COHERENCE_CHEAP_FEATURES)},
        "threshold": chosen["threshold"], "C": chosen["C"],
        "data": {"rows": len(rows), "gibberish": int(y.sum()), "parts": sorted(set(parts)), "held_out": sorted(args.hold_out),
                 "labels_sha256": label_hashes()},
        "cross_validation": grid,
        "versions": {"python": platform.python_version(), "sklearn": sklearn.__version__, "numpy": np.__version__},
    }
    meta_path.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {weights_path} and {meta_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
