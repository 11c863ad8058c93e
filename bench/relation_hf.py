#!/usr/bin/env python3
"""Hugging Face sequence classification with entity markers (AutoModelForSequenceClassification
fine-tuned end to end from a local encoder folder): the fine-tuned-transformer peer for
lmfuse's relation extraction.

    bench/.venv/bin/python bench/relation_hf.py --train T.jsonl --dev D.jsonl --test E.jsonl \
        [--model models/all-MiniLM-L6-v2] [--epochs 3] [--lr 5e-5,1e-4] [--batch-size 16] \
        [--max-length 128] [--seed 13] [--threads 2] [--predictions FILE]

Input: SemEval-2010 Task 8 JSONL ({"text" with <e1>…</e1> and <e2>…</e2>, "label"}). The four
markers are added to the tokenizer as special tokens and to the model's vocabulary
(resize_token_embeddings; transformers initialises the new rows), as lmfuse adds its marker
tokens. The head is BertForSequenceClassification's (pooler over [CLS], dropout, linear).

Training, for each learning rate (a plain PyTorch loop doing what HF Trainer does with these
settings): the model reloaded with torch.manual_seed(--seed), AdamW (betas 0.9/0.999, eps 1e-8,
weight decay 0.01 on all weights but biases and LayerNorm), linear warm-up over 10 % of the
steps then linear decay, clipping at norm 1.0, batches shuffled by a torch.Generator seeded
with --seed. Dev is scored after every epoch and the best epoch's weights kept (Trainer's
load_best_model_at_end), as lmfuse keeps its best epoch. The best rate on dev (ties: the first)
is scored on test. Scores: the official SemEval macro-F1 (9 relations, direction counted,
Other excluded), computed as the Perl scorer v1.2 does, and accuracy.

Prints one JSON object to stdout; progress goes to stderr. Needs bench/setup_python_venv.sh.
"""
import argparse
import copy
import json
import math
import sys
import time

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

MARKERS = ["<e1>", "</e1>", "<e2>", "</e2>"]


def log(msg):
    print(f"[relation_hf] {msg}", file=sys.stderr, flush=True)


def load(path):
    rows = [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]
    return [r["text"] for r in rows], [r["label"] for r in rows]


def official_macro_f1(truth, pred, other="Other"):
    """The official score: per relation (direction stripped), correct = exact label match,
    precision over all predictions of the relation, recall over its true examples; the mean F1
    over the relations in the truth, Other excluded."""
    strip = lambda l: l.split("(")[0]
    rels = sorted({strip(t) for t in truth} - {other})
    total = 0.0
    for r in rels:
        correct = sum(1 for t, p in zip(truth, pred) if t == p and strip(t) == r)
        predicted = sum(1 for p in pred if strip(p) == r)
        support = sum(1 for t in truth if strip(t) == r)
        prec = correct / predicted if predicted else 0.0
        rec = correct / support if support else 0.0
        total += 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return total / len(rels)


def batches(enc, labels, order, size):
    for s in range(0, len(order), size):
        idx = order[s:s + size]
        n = max(len(enc["input_ids"][i]) for i in idx)
        ids = torch.zeros((len(idx), n), dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for j, i in enumerate(idx):
            k = len(enc["input_ids"][i])
            ids[j, :k] = torch.tensor(enc["input_ids"][i])
            mask[j, :k] = 1
        y = torch.tensor([labels[i] for i in idx]) if labels is not None else None
        yield ids, mask, y


def predict(model, enc):
    model.eval()
    out = []
    with torch.inference_mode():
        for ids, mask, _ in batches(enc, None, list(range(len(enc["input_ids"]))), 64):
            out.extend(model(input_ids=ids, attention_mask=mask).logits.argmax(-1).tolist())
    model.train()
    return out


def run_lr(args, lr, tok, data, label_list):
    (tr, ytr), (dev, ydev) = data
    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(label_list))
    model.resize_token_embeddings(len(tok))
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    steps = math.ceil(len(ytr) / args.batch_size) * args.epochs
    sched = get_linear_schedule_with_warmup(opt, math.ceil(0.1 * steps), steps)
    gen = torch.Generator().manual_seed(args.seed)
    best, best_state = -1.0, None
    started = time.perf_counter()
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(ytr), generator=gen).tolist()
        for ids, mask, y in batches(tr, ytr, order, args.batch_size):
            loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        pred = [label_list[i] for i in predict(model, dev)]
        f1 = official_macro_f1([label_list[i] for i in ydev], pred)
        log(f"lr {lr} epoch {epoch + 1}: dev macro-F1 {f1:.4f} ({time.perf_counter() - started:.0f} s)")
        if f1 > best:
            best, best_state = f1, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    return best, model, time.perf_counter() - started


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", default="5e-5,1e-4")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--predictions", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    (tr_x, tr_y), (dev_x, dev_y), (te_x, te_y) = load(args.train), load(args.dev), load(args.test)
    label_list = sorted(set(tr_y))
    index = {l: i for i, l in enumerate(label_list)}
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.add_special_tokens({"additional_special_tokens": MARKERS})
    enc = lambda xs: tok(xs, truncation=True, max_length=args.max_length)
    data = ((enc(tr_x), [index[y] for y in tr_y]), (enc(dev_x), [index[y] for y in dev_y]))
    dev_by_lr, seconds_by_lr, best = {}, {}, None
    for lr_text in args.lr.split(","):
        f1, model, seconds = run_lr(args, float(lr_text), tok, data, label_list)
        dev_by_lr[lr_text], seconds_by_lr[lr_text] = f1, seconds
        if best is None or f1 > best[0]:
            best = (f1, lr_text, model)
    _, best_lr, model = best
    pred = [label_list[i] for i in predict(model, enc(te_x))]
    if args.predictions:
        with open(args.predictions, "w") as f:
            f.writelines(p + "\n" for p in pred)
    print(json.dumps({
        "model": args.model, "epochs": args.epochs, "batch_size": args.batch_size,
        "dev_by_lr": dev_by_lr, "seconds_by_lr": seconds_by_lr, "best_lr": best_lr,
        "test_macro_f1": official_macro_f1(te_y, pred),
        "test_accuracy": sum(a == b for a, b in zip(te_y, pred)) / len(te_y),
        "predictions": args.predictions, "torch": torch.__version__, "threads": args.threads,
    }))


main()
