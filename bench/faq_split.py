"""Splits the zaragoza FAQ (English) for the answer-engine bench (issue 21), with a fixed seed.

Out of scope: whole categories drawn until they hold at least 10 % of the entries; their
entries leave the table and their questions become out-of-scope questions (answer_id "").
In scope: the other entries are split by entry into train (60 %), dev (20 %) and test (20 %).
Every in-scope entry stays in the table with its answer and category; the questions of the dev
and test entries are held out (their table question is left empty), so that each held-out
question must be matched to its answer, not to itself. The out-of-scope questions are split
half to dev, half to test.

    python3 bench/faq_split.py datasets/zaragoza-faq/faq-en.jsonl OUT_DIR [SEED]

Writes OUT_DIR/table.csv (id, question, answer, category), dev.jsonl and test.jsonl
({"text", "answer_id"}), and split.json (the counts and the out-of-scope categories).
"""
import csv
import json
import os
import random
import sys


def main(src, out, seed=13):
    rows = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    rng = random.Random(seed)
    categories = sorted({r["category"] for r in rows})
    rng.shuffle(categories)
    oos, held = set(), 0
    for c in categories:
        if held >= 0.10 * len(rows):
            break
        oos.add(c)
        held += sum(r["category"] == c for r in rows)
    in_scope = [r for r in rows if r["category"] not in oos]
    out_scope = [r for r in rows if r["category"] in oos]
    rng.shuffle(in_scope)
    rng.shuffle(out_scope)
    n = len(in_scope)
    dev_ids = {r["id"] for r in in_scope[: n // 5]}
    test_ids = {r["id"] for r in in_scope[n // 5 : 2 * n // 5]}
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "table.csv"), "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "question", "answer", "category"])
        for r in sorted(in_scope, key=lambda r: r["id"]):
            hidden = r["id"] in dev_ids or r["id"] in test_ids
            w.writerow([r["id"], "" if hidden else r["q"], r["a"], r["category"]])
    half = len(out_scope) // 2
    for name, ids, oos_rows in [("dev", dev_ids, out_scope[:half]), ("test", test_ids, out_scope[half:])]:
        with open(os.path.join(out, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for r in sorted(in_scope, key=lambda r: r["id"]):
                if r["id"] in ids:
                    f.write(json.dumps({"text": r["q"], "answer_id": r["id"]}, ensure_ascii=False) + "\n")
            for r in oos_rows:
                f.write(json.dumps({"text": r["q"], "answer_id": ""}, ensure_ascii=False) + "\n")
    split = {
        "seed": seed,
        "entries": len(rows),
        "table_entries": len(in_scope),
        "train_questions": len(in_scope) - len(dev_ids) - len(test_ids),
        "dev_in_scope": len(dev_ids),
        "test_in_scope": len(test_ids),
        "dev_out_of_scope": half,
        "test_out_of_scope": len(out_scope) - half,
        "out_of_scope_categories": sorted(oos),
    }
    json.dump(split, open(os.path.join(out, "split.json"), "w"), indent=1)
    print(json.dumps(split))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 13)
