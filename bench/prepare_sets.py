"""Converts one shared benchmark set to JSONL text/label train/dev/test files.

Sets without a dev split get a stratified 10% dev slice of train (seed 13), so every tool sees
the same rows.  Usage: python3 bench/prepare_sets.py ../shared/data/SET OUT_DIR
"""
import csv, json, os, random, sys
src, dst = sys.argv[1], sys.argv[2]
def load(name):
    if os.path.exists(f"{src}/{name}.jsonl"):
        return [json.loads(l) for l in open(f"{src}/{name}.jsonl", encoding="utf-8") if l.strip()]
    if os.path.exists(f"{src}/{name}.csv"):
        return [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(open(f"{src}/{name}.csv", encoding="utf-8"))]
    return None
def save(name, rows):
    with open(f"{dst}/{name}.jsonl", "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"text": r["text"], "label": str(r["label"])}, ensure_ascii=False) + "\n")
train, dev, test = load("train"), load("dev"), load("test")
if dev is None:
    rng = random.Random(13)
    by = {}
    for i, r in enumerate(train):
        by.setdefault(str(r["label"]), []).append(i)
    held = set()
    for label in sorted(by):
        idx = by[label]; rng.shuffle(idx)
        held.update(idx[:max(1, round(0.1 * len(idx)))] if len(idx) > 1 else [])
    dev = [r for i, r in enumerate(train) if i in held]
    train = [r for i, r in enumerate(train) if i not in held]
save("train", train); save("dev", dev); save("test", test)
