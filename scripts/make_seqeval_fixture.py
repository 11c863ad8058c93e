"""Writes crates/lmfuse-metrics/tests/fixtures/seqeval.json: entity-level NER scores computed by
seqeval, for the Rust NER metrics to reproduce.

Each case holds gold and predicted tag sequences (a list of sentences, each a non-empty list
of tag strings such as "B-PER", "I-LOC", "E-ORG", "S-MISC", "O") and seqeval's
classification_report in two modes:

    "default"  classification_report(gold, pred, output_dict=True, zero_division=0)
               conlleval-like chunking: invalid moves (I-X after O, I-Y after B-X, a sentence
               starting with I-X) start a new entity instead of being dropped. seqeval's
               default chunker also knows E- and S- tags, so IOBES cases get it too.
    "strict"   the same with mode="strict", scheme=IOB2 or IOBES (the case's "scheme"):
               only entities that are well formed in that scheme count.

REPORT = {"per_type": {TYPE: {"precision", "recall", "f1", "support"}},
          "micro": {...}, "macro": {...}, "weighted": {...}}
Precision, recall and f1 are raw 0-1 floats; support is an int. A type that occurs only in
the predictions is listed with support 0. When no entity exists in gold or predictions
(the all-O case), seqeval's macro average is NaN, written here as null.

Gold is valid in its scheme except in the case named "iob2_invalid_gold". All randomness
comes from random.Random(20261206), so the output is reproducible. Made once and committed;
rerun only to change it (needs bench/setup_ner_venv.sh first):

    bash bench/setup_ner_venv.sh
    bench/.venv-ner/bin/python scripts/make_seqeval_fixture.py
"""
import json
import math
import os
import random
from importlib.metadata import version

from seqeval.metrics import classification_report
from seqeval.scheme import IOB2, IOBES

OUT = os.path.join(os.path.dirname(__file__), "..", "crates/lmfuse-metrics/tests/fixtures/seqeval.json")
TYPES = ["PER", "LOC", "ORG", "MISC"]
SCHEMES = {"IOB2": IOB2, "IOBES": IOBES}


def random_spans(rng, length, types, p_start=0.25, max_len=4):
    """Non-overlapping (type, start, end_exclusive) entity spans over `length` tokens."""
    spans, i = [], 0
    while i < length:
        if rng.random() < p_start:
            n = min(rng.randint(1, max_len), length - i)
            spans.append((rng.choice(types), i, i + n))
            i += n
        else:
            i += 1
    return spans


def spans_to_tags(spans, length, scheme):
    """Well-formed tags for the spans: IOB2 (B-, I-) or IOBES (B-, I-, E-, S-)."""
    tags = ["O"] * length
    for t, s, e in spans:
        for k in range(s, e):
            if scheme == "IOB2":
                p = "B" if k == s else "I"
            elif e - s == 1:
                p = "S"
            else:
                p = "B" if k == s else ("E" if k == e - 1 else "I")
            tags[k] = f"{p}-{t}"
    return tags


def corrupt_spans(rng, spans, length, types):
    """Typical model errors at span level: missed, retyped, resized, and spurious entities."""
    out = []
    for t, s, e in spans:
        r = rng.random()
        if r < 0.10:
            continue  # missed
        if r < 0.20:
            t = rng.choice([x for x in types if x != t])  # wrong type
        elif r < 0.30:
            s = max(0, s + rng.choice([-1, 1]))  # wrong left boundary
        elif r < 0.40:
            e = min(length, e + rng.choice([-1, 1]))  # wrong right boundary
        if e > s:
            out.append((t, s, e))
    # Spurious entities where nothing overlaps.
    for t, s, e in random_spans(rng, length, types, p_start=0.05, max_len=2):
        if all(e <= a or s >= b for _, a, b in out):
            out.append((t, s, e))
    # Boundary changes can overlap a neighbour: keep the first of overlapping spans.
    kept = []
    for span in sorted(out, key=lambda x: x[1]):
        if not kept or span[1] >= kept[-1][2]:
            kept.append(span)
    return kept


def token_noise(rng, tags, scheme, types, rate):
    """Replaces tags by random ones, which makes invalid moves (I- after O, type switches...)."""
    prefixes = "BI" if scheme == "IOB2" else "BIES"
    return [
        (rng.choice(["O"] + [f"{p}-{t}" for p in prefixes for t in types]) if rng.random() < rate else tag)
        for tag in tags
    ]


def random_case(rng, name, scheme, n_sentences, max_len, noise):
    gold, pred = [], []
    for _ in range(n_sentences):
        length = rng.randint(1, max_len)
        spans = random_spans(rng, length, TYPES)
        gold.append(spans_to_tags(spans, length, scheme))
        p = spans_to_tags(corrupt_spans(rng, spans, length, TYPES), length, scheme)
        pred.append(token_noise(rng, p, scheme, TYPES, noise))
    return {"name": name, "scheme": scheme, "gold": gold, "pred": pred}


def hand_cases():
    """Small cases written out so that each one shows one behaviour."""
    c = []

    def add(name, scheme, gold, pred):
        c.append({"name": name, "scheme": scheme, "gold": [s.split() for s in gold],
                  "pred": [s.split() for s in pred]})

    add("iob2_exact_match", "IOB2",
        ["B-PER I-PER O B-LOC", "O B-ORG I-ORG I-ORG O B-MISC", "B-LOC B-LOC O"],
        ["B-PER I-PER O B-LOC", "O B-ORG I-ORG I-ORG O B-MISC", "B-LOC B-LOC O"])
    add("iob2_valid_errors", "IOB2",  # all predictions valid: boundary, type, missed, spurious
        ["B-PER I-PER O B-LOC O", "B-ORG I-ORG O O B-MISC I-MISC", "O B-PER O B-LOC I-LOC"],
        ["B-PER O O B-ORG O", "B-ORG I-ORG O O B-MISC I-MISC", "B-MISC B-PER O B-LOC B-LOC"])
    add("iob2_i_after_o", "IOB2",
        ["O B-PER I-PER O", "B-LOC I-LOC O O B-ORG"],
        ["O I-PER I-PER O", "B-LOC I-LOC O I-ORG I-ORG"])
    add("iob2_sentence_starts_with_i", "IOB2",
        ["B-PER I-PER O", "B-LOC O", "B-ORG I-ORG I-ORG"],
        ["I-PER I-PER O", "I-LOC O", "I-ORG I-ORG I-ORG"])
    add("iob2_type_switch", "IOB2",  # I-Y right after B-X or I-X
        ["B-PER I-PER I-PER O", "B-ORG I-ORG O", "B-LOC I-LOC B-MISC"],
        ["B-PER I-LOC I-LOC O", "B-ORG I-ORG O", "B-LOC I-MISC I-MISC"])
    add("iob2_mixed_invalid", "IOB2",  # all invalid moves together, plus valid entities
        ["B-PER I-PER O B-ORG I-ORG", "O O B-MISC I-MISC", "B-LOC", "O B-PER O"],
        ["I-PER I-PER O B-ORG I-LOC", "O I-MISC B-MISC I-MISC", "I-LOC", "O B-PER I-PER"])
    add("all_o", "IOB2",
        ["O O O", "O", "O O"],
        ["O O O", "O", "O O"])
    add("type_only_in_pred", "IOB2",  # MISC is predicted but never in gold
        ["B-PER I-PER O", "B-LOC O O"],
        ["B-PER I-PER B-MISC", "B-LOC O B-MISC"])
    add("type_only_in_gold", "IOB2",  # ORG is in gold but never predicted
        ["B-PER O B-ORG I-ORG", "B-ORG O B-LOC"],
        ["B-PER O O O", "O O B-LOC"])
    add("pred_all_o", "IOB2",  # entities in gold, none predicted
        ["B-PER I-PER O", "B-LOC O B-ORG"],
        ["O O O", "O O O"])
    add("iob2_invalid_gold", "IOB2",  # gold itself has invalid moves
        ["I-PER I-PER O", "B-LOC I-ORG O", "O I-MISC"],
        ["B-PER I-PER O", "B-LOC B-ORG O", "O B-MISC"])
    add("iobes_valid", "IOBES",
        ["B-PER E-PER O S-LOC", "B-ORG I-ORG E-ORG O S-MISC", "S-PER S-PER O"],
        ["B-PER E-PER O S-ORG", "B-ORG E-ORG S-ORG O S-MISC", "S-PER S-PER O"])
    add("iobes_invalid", "IOBES",  # B- without E-, lone I-/E-, type switch, B-B, S- then E-
        ["B-PER I-PER E-PER O", "S-LOC O B-ORG E-ORG", "B-MISC E-MISC S-PER", "O S-LOC O"],
        ["B-PER I-PER O O", "I-LOC O E-ORG E-ORG", "B-MISC E-PER S-PER", "B-LOC S-LOC E-LOC"])
    return c


def report(gold, pred, **kw):
    raw = classification_report(gold, pred, output_dict=True, zero_division=0, **kw)

    def num(x):
        x = float(x)
        return None if math.isnan(x) else x  # NaN is not valid JSON

    def row(d):
        return {"precision": num(d["precision"]), "recall": num(d["recall"]),
                "f1": num(d["f1-score"]), "support": int(d["support"])}

    avgs = {"micro avg": "micro", "macro avg": "macro", "weighted avg": "weighted"}
    out = {"per_type": {k: row(v) for k, v in raw.items() if k not in avgs}}
    for k, name in avgs.items():
        out[name] = row(raw[k])
    return out


def main():
    rng = random.Random(20261206)
    cases = hand_cases()
    cases.append(random_case(rng, "iobes_random", "IOBES", 30, 12, noise=0.08))
    cases.append(random_case(rng, "iob2_random_large", "IOB2", 200, 20, noise=0.05))
    for case in cases:
        assert case["gold"] and len(case["gold"]) == len(case["pred"]), case["name"]
        for g, p in zip(case["gold"], case["pred"]):
            assert g and len(g) == len(p), f"{case['name']}: empty sentence or length mismatch"
        case["default"] = report(case["gold"], case["pred"])
        case["strict"] = report(case["gold"], case["pred"], mode="strict", scheme=SCHEMES[case["scheme"]])
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w") as f:
        json.dump({"seqeval_version": version("seqeval"), "cases": cases}, f, indent=1, sort_keys=True,
                  allow_nan=False)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)} ({os.path.getsize(OUT) // 1024} KB)")


if __name__ == "__main__":
    main()
