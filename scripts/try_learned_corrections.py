"""Two learned corrections on top of the ``default`` judge, each tested only on rounds it never saw.

The second reading of rounds 10 and 11 (docs/JUDGES.md) found that readers agree on what the rules
miss, so a model that reads the request with the answer might learn it. Neither correction below is
shipped; this script measures them.

``corrector``: a multinomial logistic regression over the MiniLM embedding of the completion, its
product with the request's, word statistics, the coherence check's P(gibberish), the keyword rules'
verdict and where they found a refusal, and the default verdict. It overrides the default verdict
when it predicts another class with probability >= t. C and t are chosen by leave-one-part-out
cross-validation on the training parts (most fixes minus breaks, then the higher t, then the lower
C). Temporal test: fit on judge-train and rounds 1-9, score round 10; fit on rounds 1-10, score 11.

``prefix``: among the default judge's refusals whose refusal clause has text before it (DeRTa's
short answer, then its refusal line), is that text an answer (``partial``)? A binary logistic
regression on the embedding of the text before the refusal, its similarity to the request and a few
shape features (length, a dangling last word, a closing colon), cross-validated one labelled part at
a time over ``dev``.

    python scripts/try_learned_corrections.py corrector
    python scripts/try_learned_corrections.py prefix
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_accuracy import CLASSES, LABELLED_ORDER, load_set  # noqa: E402

from mosr.judges import get_judge  # noqa: E402
from mosr.judges.coherence import CoherenceCheck, word_statistics  # noqa: E402
from mosr.judges.embedding import get_embedder  # noqa: E402
from mosr.judges.gibberish import gibberish_reason  # noqa: E402
from mosr.judges.keyword import load_keyword_rules  # noqa: E402

DANGLING = frozenset("a an the of to and or with for in on is are can by that as".split())


def corrector() -> None:
    rows = load_set(part="dev")
    reqs, comps = [r["request"] or "" for r in rows], [r["completion"] for r in rows]
    v0 = np.array([CLASSES.index(j.verdict) for j in get_judge("default").judge(reqs, comps)])
    rules, embedder = load_keyword_rules(), get_embedder()
    ec, er = embedder.embed(comps, max_tokens=128, desc="completions"), embedder.embed(reqs, max_tokens=64, desc="requests")
    coherence = CoherenceCheck().proba(ec, er, comps)
    extra = []
    for i, c in enumerate(comps):
        verdict, why = rules.classify(c)
        clause = re.search(r"at clause (\d+)", why)
        before = re.search(r"(\d+) words of answer", why)
        extra.append([*word_statistics(c), float(ec[i] @ er[i]), float(coherence[i]), float(gibberish_reason(c) is not None),
                      min(int(clause.group(1)) if clause else 0, 10) / 10, min(int(before.group(1)) if before else 0, 50) / 50,
                      float("\n\n" in c), *[float(verdict == k) for k in CLASSES], *[float(v0[i] == k) for k in range(len(CLASSES))]])
    x = np.hstack([ec, ec * er, np.asarray(extra, np.float32)])
    y = np.array([CLASSES.index(r["label"]) for r in rows])
    part, source = np.array([r["judge_split"] for r in rows]), np.array([r["source"] for r in rows])

    def corrected(model: LogisticRegression, idx: np.ndarray, t: float) -> np.ndarray:
        p = model.predict_proba(x[idx])
        out = v0[idx].copy()
        flip = (p.argmax(1) != v0[idx]) & (p.max(1) >= t)
        out[flip] = p.argmax(1)[flip]
        return out

    for test in ("judge-test-10", "judge-test-11"):
        train = LABELLED_ORDER[: LABELLED_ORDER.index(test)]
        best = None
        for c in (0.1, 0.3, 1.0, 3.0):
            folds = []
            for held in train:
                fit_rows = np.isin(part, [q for q in train if q != held])
                folds.append((LogisticRegression(C=c, max_iter=3000).fit(x[fit_rows], y[fit_rows]), np.where(part == held)[0]))
            for t in (0.5, 0.6, 0.7, 0.8, 0.9, 0.95):
                gain = sum(int((corrected(m, te, t) == y[te]).sum() - (v0[te] == y[te]).sum()) for m, te in folds)
                if best is None or (gain, t, -c) > best[0]:
                    best = ((gain, t, -c), c, t)
        (gain, _, _), c, t = best
        fit_rows = np.isin(part, train)
        model = LogisticRegression(C=c, max_iter=3000).fit(x[fit_rows], y[fit_rows])
        te = np.where(part == test)[0]
        out = corrected(model, te, t)
        print(f"\n{test}: fitted on {', '.join(train)}; chosen C={c}, t={t} (cross-validated gain {gain:+d})")
        print("| source | default | corrected | n |\n|---|---|---|---|")
        for s in ["all", *sorted(set(source))]:
            keep = np.ones(len(te), bool) if s == "all" else source[te] == s
            print(f"| {s} | {100 * (v0[te][keep] == y[te][keep]).mean():.1f}% | {100 * (out[keep] == y[te][keep]).mean():.1f}% | {int(keep.sum())} |")
        flips = Counter(f"{CLASSES[a]}->{CLASSES[b]} ({'fix' if b == y[i] else 'break' if a == y[i] else 'wrong to wrong'})"
                        for a, b, i in zip(v0[te], out, te) if a != b)
        print("changed verdicts:", dict(flips))


def prefix() -> None:
    rules = load_keyword_rules()
    rows = load_set(part="dev")
    judgments = get_judge("default").judge([r["request"] or "" for r in rows], [r["completion"] for r in rows])
    cand = []
    for r, j in zip(rows, judgments):
        found = re.search(r"at clause (\d+)$", j.explanation)
        if j.verdict == "refusal" and j.explanation.startswith("refusal phrase") and found and int(found.group(1)) > 1:
            i = int(found.group(1)) - 1
            cand.append((r, " ".join(rules._clauses(r["completion"])[:i]), i))
    labels = np.array([r["label"] for r, _, _ in cand])
    print(f"{len(cand)} refusals with text before the refusal clause; labels: {dict(Counter(labels))}")
    embedder = get_embedder()
    eb = embedder.embed([b for _, b, _ in cand], max_tokens=64, desc="text before the refusal")
    er = embedder.embed([r["request"] or "" for r, _, _ in cand], max_tokens=64, desc="requests")

    def shape(b: str, i: int) -> list[float]:
        w = b.split()
        return [np.log1p(len(w)) / 4, float(not w or w[-1].strip(".,:;!?\"'") in DANGLING), float(b.rstrip().endswith(":")),
                min(i, 10) / 10, len(set(w)) / max(len(w), 1)]

    cheap = np.hstack([np.sum(eb * er, 1)[:, None], np.asarray([shape(b, i) for _, b, i in cand], np.float32)])
    y = (labels == "partial").astype(int)
    part, source = np.array([r["judge_split"] for r, _, _ in cand]), np.array([r["source"] for r, _, _ in cand])
    print("\n| features | C | threshold | fixes | breaks | net | net on derta |\n|---|---|---|---|---|---|---|")
    for name, x in (("similarity + shape", cheap), ("+ embedding", np.hstack([eb, cheap]))):
        for c in (0.1, 0.3, 1.0, 3.0):
            p = np.zeros(len(y))
            for held in sorted(set(part)):
                tr = part != held
                if len(set(y[tr])) == 2:
                    p[part == held] = LogisticRegression(C=c, max_iter=3000, class_weight="balanced").fit(x[tr], y[tr]).predict_proba(x[part == held])[:, 1]
            for t in (0.5, 0.7, 0.9):
                flip = p >= t
                fixes, breaks = int((flip & (labels == "partial")).sum()), int((flip & (labels == "refusal")).sum())
                derta = int((flip & (labels == "partial") & (source == "derta")).sum()) - int((flip & (labels == "refusal") & (source == "derta")).sum())
                print(f"| {name} | {c} | {t} | {fixes} | {breaks} | {fixes - breaks:+d} | {derta:+d} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("experiment", choices=("corrector", "prefix"))
    {"corrector": corrector, "prefix": prefix}[ap.parse_args().experiment]()


if __name__ == "__main__":
    main()
