#!/usr/bin/env python3
"""Throughput of the Hugging Face token-classification pipeline on texts, one a line: the peer
of `lmfuse ner predict` in bench/ner_speed.sh.

    bench/.venv/bin/python bench/ner_speed_hf.py TEXTS.txt MODEL_DIR LABELS THREADS

The model is MODEL_DIR's encoder with a token-classification head of LABELS (comma-separated)
labels, freshly initialised: speed does not depend on the head's weights. Prints one JSON
object: sentences, seconds, sentences_per_second, batch_size, threads, versions.
"""
import json
import sys
import time

import torch
import transformers
from transformers import AutoModelForTokenClassification, AutoTokenizer, pipeline


def main():
    path, model_dir, labels, threads = sys.argv[1], sys.argv[2], sys.argv[3].split(","), int(sys.argv[4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    with open(path, encoding="utf-8") as f:
        texts = [line.rstrip("\n") for line in f if line.strip()]
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForTokenClassification.from_pretrained(
        model_dir, num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={l: i for i, l in enumerate(labels)})
    model.eval()
    tagger = pipeline("token-classification", model=model, tokenizer=tok,
                      aggregation_strategy="simple", device=-1)
    batch = 32
    tagger(texts[:20], batch_size=batch)  # warm-up
    started = time.perf_counter()
    with torch.inference_mode():
        tagger(texts, batch_size=batch)
    seconds = time.perf_counter() - started
    print(json.dumps({
        "peer": "hf-token-classification-pipeline", "sentences": len(texts), "seconds": seconds,
        "sentences_per_second": len(texts) / seconds, "batch_size": batch, "threads": threads,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }))


if __name__ == "__main__":
    main()
