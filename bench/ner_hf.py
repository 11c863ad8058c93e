#!/usr/bin/env python3
"""Hugging Face token classification (AutoModelForTokenClassification, fine-tuned end to end
from a local encoder folder): the fine-tuned-transformer peer for lmfuse's NER.

    bench/.venv/bin/python bench/ner_hf.py --train T.jsonl --dev D.jsonl --test E.jsonl \
        [--model models/all-MiniLM-L6-v2] [--epochs 3] [--lr 5e-5,1e-4,2e-4] [--batch-size 16] \
        [--max-length 128] [--seed 0] [--threads 2] [--weight-decay 0.01] [--warmup-ratio 0.1] \
        [--limit-train N] [--limit-eval N]

Input: JSONL files written by `lmfuse ner features --input X.conll --repair-bio -o X.jsonl`,
one sentence per line: {"tokens": [str], "tags": [str (IOB2)], "features": [...]}; "features"
is ignored here.

Labels: "O" plus B-/I- of every entity type seen in any of the three files (types missing
from train get a label that is never trained). The encoder folder may be a sentence-transformers
folder (config.json + model.safetensors + tokenizer.json): the encoder weights are loaded from
it and the token-classification head (dropout + linear) is newly initialised; any other
missing weight is an error.

Tokenisation: the fast tokenizer with is_split_into_words=True, truncation at --max-length
subwords. The first subword of each word carries the word's label, all other subwords and the
special tokens carry -100 (ignored by the loss). Words left without a subword (truncated away,
or words the tokenizer's normaliser erases entirely) are predicted "O"; their counts are logged
and reported.

Training, for each learning rate of the grid (a plain PyTorch loop, which is what HF Trainer
does with these settings): the model is reloaded with torch.manual_seed(--seed) (so every lr
starts from the same head), AdamW (torch.optim.AdamW, betas 0.9/0.999, eps 1e-8, weight decay
on all weights but biases and LayerNorm weights, as Trainer does), linear schedule with linear
warm-up over --warmup-ratio of the steps, gradient clipping at norm 1.0 (Trainer's default),
batches of --batch-size sentences shuffled every epoch by a torch.Generator seeded with --seed,
padded to the longest sentence of the batch. After the last epoch the model is scored on dev
with seqeval's strict IOB2 micro F1. The best lr on dev (ties: the first in --lr order) is
scored on test; there is no refit on train+dev.

Decoding: argmax over the labels at each word's first subword, no transition constraints, i.e.
what HF's token classification does; an I- tag without a matching B- is then simply not an
entity under seqeval's strict mode.

Throughput: HF's pipeline("token-classification", aggregation_strategy="simple", device=-1) over
the raw test sentences (tokens joined by single spaces), batch_size 32, after a warm-up on the
first 20 sentences; sentences/s over all test sentences. --threads sets torch.set_num_threads
for everything (training, evaluation, the pipeline).

Prints one JSON object to stdout (scores are raw 0-1 floats); progress goes to stderr.

Needs bench/setup_python_venv.sh (torch, transformers via sentence-transformers, seqeval).
"""
import argparse
import copy
import json
import math
import platform
import sys
import time
from importlib.metadata import version

import torch
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from transformers import AutoModelForTokenClassification, AutoTokenizer, get_linear_schedule_with_warmup, pipeline

PIPELINE_BATCH = 32
PIPELINE_WARMUP = 20
EVAL_BATCH = 64


def log(msg):
    print(f"[ner_hf] {msg}", file=sys.stderr, flush=True)


def load(path, limit=None):
    """Returns (tokens, tags): lists of lists of strings."""
    xs, ys = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            tokens, tags = row["tokens"], row["tags"]
            if not tokens or len(tokens) != len(tags):
                sys.exit(f"{path}:{n}: need non-empty tokens and tags of equal length")
            for t in tags:
                if t != "O" and not (t[:2] in ("B-", "I-") and len(t) > 2):
                    sys.exit(f"{path}:{n}: tag {t!r} is not IOB2")
            xs.append([str(t) for t in tokens])
            ys.append([str(t) for t in tags])
            if limit is not None and len(xs) >= limit:
                break
    if not xs:
        sys.exit(f"{path}: no sentences")
    return xs, ys


def encode(tok, sents, tags, label2id, max_length):
    """Tokenises each sentence; returns a list of dicts with input_ids, attention_mask, labels
    (-100 except at first subwords) and first (token position of each word's first subword,
    -1 where the word has none), plus counts of words without a subword."""
    enc = tok(sents, is_split_into_words=True, truncation=True, max_length=max_length)
    out, truncated, lost_words, empty_words = [], 0, 0, 0
    for i, words in enumerate(sents):
        word_ids = enc.word_ids(i)
        first = [-1] * len(words)
        labels = [-100] * len(word_ids)
        for pos, w in enumerate(word_ids):
            if w is not None and first[w] < 0:
                first[w] = pos
                if tags is not None:
                    labels[pos] = label2id[tags[i][w]]
        seen = max((w for w in word_ids if w is not None), default=-1)
        if seen < len(words) - 1:
            truncated += 1
            lost_words += len(words) - 1 - seen
        empty_words += sum(1 for w in range(seen + 1) if first[w] < 0)
        out.append({"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i],
                    "labels": labels, "first": first})
    return out, {"truncated_sentences": truncated, "words_truncated_away": lost_words,
                 "words_without_subword": empty_words}


def collate(rows, pad_id):
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k] = torch.tensor(r["input_ids"])
        mask[i, :k] = torch.tensor(r["attention_mask"])
        labels[i, :k] = torch.tensor(r["labels"])
    return ids, mask, labels


def load_model(path, labels, seed):
    torch.manual_seed(seed)  # the new head's initialisation
    id2label = dict(enumerate(labels))
    label2id = {l: i for i, l in enumerate(labels)}
    model, info = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=id2label, label2id=label2id, output_loading_info=True)
    missing = [k for k in info.get("missing_keys", []) if not k.startswith("classifier.")]
    if missing:
        sys.exit(f"{path}: weights missing besides the new classifier head: {missing}")
    if info.get("mismatched_keys"):
        sys.exit(f"{path}: weights of the wrong shape: {info['mismatched_keys']}")
    return model, info


def predict(model, rows, id2label, pad_id):
    """Argmax label at each word's first subword; "O" for words without one."""
    model.eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), EVAL_BATCH):
            batch = rows[s:s + EVAL_BATCH]
            ids, mask, _ = collate(batch, pad_id)
            best = model(input_ids=ids, attention_mask=mask).logits.argmax(-1)
            for i, r in enumerate(batch):
                out.append([id2label[int(best[i, p])] if p >= 0 else "O" for p in r["first"]])
    return out


def scores(gold, pred):
    """seqeval strict IOB2 entity scores: micro average and per type."""
    r = classification_report(gold, pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)

    def row(d):
        return {"precision": float(d["precision"]), "recall": float(d["recall"]),
                "f1": float(d["f1-score"]), "support": int(d["support"])}

    per_type = {k: row(v) for k, v in r.items() if not k.endswith(" avg")}
    return row(r["micro avg"]), per_type


def train(model, rows, args, lr, pad_id):
    decay = [p for n, p in model.named_parameters() if not (n.endswith(".bias") or "LayerNorm" in n)]
    no_decay = [p for n, p in model.named_parameters() if n.endswith(".bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.999), eps=1e-8)
    steps_per_epoch = math.ceil(len(rows) / args.batch_size)
    total = steps_per_epoch * args.epochs
    sched = get_linear_schedule_with_warmup(opt, math.ceil(args.warmup_ratio * total), total)
    gen = torch.Generator().manual_seed(args.seed)
    every = max(1, steps_per_epoch // 5)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(rows), generator=gen).tolist()
        start, loss_sum = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            ids, mask, labels = collate([rows[i] for i in order[step * args.batch_size:(step + 1) * args.batch_size]],
                                        pad_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            if (step + 1) % every == 0 or step + 1 == steps_per_epoch:
                log(f"  lr={lr} epoch {epoch + 1}/{args.epochs} step {step + 1}/{steps_per_epoch} "
                    f"mean loss {loss_sum / (step + 1):.4f} ({time.perf_counter() - start:.1f} s)")
    model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--model", default="models/all-MiniLM-L6-v2", help="local encoder folder")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", default="5e-5,1e-4,2e-4", help="comma-separated learning-rate grid, chosen on dev")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-length", type=int, default=128, help="subwords per sentence, special tokens included")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--limit-train", type=int, default=None, help="use only the first N train sentences (smoke runs)")
    ap.add_argument("--limit-eval", type=int, default=None,
                    help="use only the first N dev and test sentences (smoke runs)")
    args = ap.parse_args()
    grid = [float(x) for x in args.lr.split(",")]
    torch.set_num_threads(args.threads)

    (tr_x, tr_y) = load(args.train, args.limit_train)
    (dv_x, dv_y), (te_x, te_y) = (load(p, args.limit_eval) for p in (args.dev, args.test))
    types = sorted({t[2:] for ys in (tr_y, dv_y, te_y) for s in ys for t in s if t != "O"})
    labels = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    label2id = {l: i for i, l in enumerate(labels)}
    id2label = dict(enumerate(labels))
    log(f"train {len(tr_x)} sentences, dev {len(dv_x)}, test {len(te_x)}; {len(labels)} labels: {labels}")
    log(f"torch {torch.__version__}, transformers {version('transformers')}, {torch.get_num_threads()} threads")

    tok = AutoTokenizer.from_pretrained(args.model)
    if not tok.is_fast:
        sys.exit(f"{args.model}: needs a fast tokenizer (tokenizer.json) for word_ids()")
    pad_id = tok.pad_token_id
    tr_rows, tr_stats = encode(tok, tr_x, tr_y, label2id, args.max_length)
    dv_rows, dv_stats = encode(tok, dv_x, None, label2id, args.max_length)
    te_rows, te_stats = encode(tok, te_x, None, label2id, args.max_length)
    for name, st in (("train", tr_stats), ("dev", dv_stats), ("test", te_stats)):
        log(f"{name}: {st}")

    dev_f1, train_s, best = {}, {}, None
    for lr in grid:
        model, info = load_model(args.model, labels, args.seed)
        if lr == grid[0]:
            log(f"loaded {args.model}: new weights {info.get('missing_keys')}, "
                f"unused weights {info.get('unexpected_keys')}")
        start = time.perf_counter()
        train(model, tr_rows, args, lr, pad_id)
        seconds = time.perf_counter() - start
        f1 = scores(dv_y, predict(model, dv_rows, id2label, pad_id))[0]["f1"]
        key = str(lr)
        dev_f1[key], train_s[key] = f1, seconds
        log(f"lr={lr}: train {seconds:.1f} s, dev strict micro F1 {f1:.4f}")
        if best is None or f1 > best[1]:
            best = (lr, f1, copy.deepcopy(model.state_dict()))
        del model

    lr, _, state = best
    model, _ = load_model(args.model, labels, args.seed)
    model.load_state_dict(state)
    model.eval()
    micro, per_type = scores(te_y, predict(model, te_rows, id2label, pad_id))
    log(f"chosen lr={lr}: test strict micro F1 {micro['f1']:.4f}")

    pipe = pipeline("token-classification", model=model, tokenizer=tok, aggregation_strategy="simple", device=-1)
    texts = [" ".join(s) for s in te_x]
    pipe(texts[:PIPELINE_WARMUP], batch_size=PIPELINE_BATCH)
    start = time.perf_counter()
    found = pipe(texts, batch_size=PIPELINE_BATCH)
    pipe_s = time.perf_counter() - start
    log(f"pipeline: {len(texts)} sentences in {pipe_s:.2f} s ({len(texts) / pipe_s:.1f}/s), "
        f"{sum(len(f) for f in found)} entities")

    print(json.dumps({
        "peer": "hf-token-classification",
        "model": args.model,
        "versions": {"torch": torch.__version__, "transformers": version("transformers"),
                     "tokenizers": version("tokenizers"), "seqeval": version("seqeval"),
                     "python": platform.python_version()},
        "epochs": args.epochs,
        "lr_grid": grid,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "weight_decay": args.weight_decay,
        "warmup_ratio": args.warmup_ratio,
        "seed": args.seed,
        "labels": labels,
        "dev_f1_by_lr": dev_f1,
        "train_seconds_by_lr": train_s,
        "chosen_lr": lr,
        "test": {"micro": micro, "per_type": per_type, "strict": True},
        "pipeline_sentences_per_second": len(texts) / pipe_s if pipe_s > 0 else None,
        "pipeline_seconds": pipe_s,
        "pipeline_batch_size": PIPELINE_BATCH,
        "pipeline_entities_test": sum(len(f) for f in found),
        "train_sentences": len(tr_x),
        "dev_sentences": len(dv_x),
        "test_sentences": len(te_x),
        "limit_train": args.limit_train,
        "limit_eval": args.limit_eval,
        "tokenization": {"train": tr_stats, "dev": dv_stats, "test": te_stats},
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
