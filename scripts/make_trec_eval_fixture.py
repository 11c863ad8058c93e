"""Writes crates/lmfuse-metrics/tests/fixtures/trec_eval.json: ranking scores computed by
pytrec_eval (trec_eval 9), for lmfuse's ranking metrics to reproduce.

One case: "qrels" {query: {doc: grade}} with grades 0-2 (some queries without a relevant
document, one judged query missing from the run, one run query not judged), "run" {query:
{doc: score}} with many tied scores (scores rounded to one decimal; relevant documents retrieved more often and scored higher, so the measures are far from 0), and "scores" {query:
{measure: value}} for ndcg_cut_3, ndcg_cut_10, recall_5, recall_100, map and recip_rank as
pytrec_eval.RelevanceEvaluator gives them. All randomness comes from random.Random(20261206).
Made once and committed; rerun only to change it:

    python3 -m venv /tmp/pyte && /tmp/pyte/bin/pip install pytrec-eval-terrier
    /tmp/pyte/bin/python scripts/make_trec_eval_fixture.py
"""
import json
import os
import random

import pytrec_eval

MEASURES = {"ndcg_cut.3,10", "recall.5,100", "map", "recip_rank"}


def make_case(rng):
    docs = [f"d{i:03d}" for i in range(150)]
    qrels, run = {}, {}
    for q in range(40):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 12))
        grades = [rng.choice([0, 1, 1, 2]) if q % 9 else 0 for _ in judged]
        qrels[qid] = dict(zip(judged, grades))
        if q == 5:
            continue  # judged, not retrieved
        retrieved = set(rng.sample(docs, rng.randint(5, 120)))
        retrieved |= {d for d in judged if rng.random() < 0.7}
        boost = {d: 0.5 * g for d, g in qrels[qid].items()}
        run[qid] = {d: round(rng.random() + boost.get(d, 0.0), 1) for d in sorted(retrieved)}
    run["unjudged"] = {"d001": 1.0}
    return qrels, run


def main():
    rng = random.Random(20261206)
    qrels, run = make_case(rng)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, MEASURES)
    scores = evaluator.evaluate(run)
    out = os.path.join(
        os.path.dirname(__file__), "..", "crates", "lmfuse-metrics", "tests", "fixtures",
        "trec_eval.json",
    )
    with open(out, "w", encoding="utf-8") as f:
        json.dump({"qrels": qrels, "run": run, "scores": scores}, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"wrote {out}: {len(scores)} queries scored")


if __name__ == "__main__":
    main()
