#!/usr/bin/env python3
"""Writes bench/results/ner.md from bench/ner.sh's outputs (bench/out/ner/<set>/).

    python3 bench/ner_table.py bench/results/ner.md wnut17 msra_ner_zh
"""
import json
import os
import platform
import sys


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def pct(x):
    return "–" if x is None else f"{100 * x:.2f}"


def cpu():
    flags, model = set(), "?"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name") and model == "?":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    keep = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{model}; {' '.join(keep)}; {os.cpu_count()} cores; {platform.python_version()}"


def lmfuse_row(name, d, note=""):
    r = load(os.path.join(d, f"lmfuse_{name}.json"))
    t = load(os.path.join(d, f"lmfuse_{name}.json.time")) or {}
    if not r:
        return None
    train, test = r["train"], r.get("test") or {}
    micro = test.get("micro", {})
    n = test.get("sentences")
    rate = n / r["test_tag_seconds"] if n and r.get("test_tag_seconds") else None
    return [
        f"lmfuse {LABELS.get(name, name)}{note}",
        pct(train["dev"]["micro"]["f1"]) if train.get("dev") else "–",
        pct(micro.get("precision")), pct(micro.get("recall")), pct(micro.get("f1")),
        f"c2 {train['c2']}, {train['fit']['iterations']} it",
        f"{train['fit_seconds']:.0f}",
        f"{t.get('wall_seconds', 0):.0f}",
        f"{t.get('max_rss_kb', 0) / 1024:.0f}",
        f"{rate:.0f}" if rate else "–",
    ]


def crfsuite_row(d):
    r = load(os.path.join(d, "crfsuite.json"))
    t = load(os.path.join(d, "crfsuite.json.time")) or {}
    if not r:
        return None
    c2 = r["chosen_c2"]
    key = next((k for k in r["dev_f1_by_c2"] if float(k) == float(c2)), None)
    micro = r["test"]["micro"]
    return [
        "sklearn-crfsuite (same features)",
        pct(r["dev_f1_by_c2"].get(key)),
        pct(micro["precision"]), pct(micro["recall"]), pct(micro["f1"]),
        f"c2 {c2}, {r['iterations_by_c2'].get(key, '?')} it",
        f"{r['fit_seconds_by_c2'].get(key, 0):.0f}",
        f"{t.get('wall_seconds', 0):.0f}",
        f"{t.get('max_rss_kb', 0) / 1024:.0f}",
        f"{r.get('sentences_per_second_predict', 0):.0f}",
    ]


def hf_row(d, name):
    r = load(os.path.join(d, "hf.json")) or load(os.path.join(os.path.dirname(d), f"hf_{name}.json"))
    if not r:
        return None
    lr = r["chosen_lr"]
    key = next((k for k in r["dev_f1_by_lr"] if float(k) == float(lr)), None)
    micro = r["test"]["micro"]
    return [
        f"HF token classification ({r['epochs']} epochs, fine-tuned)",
        pct(r["dev_f1_by_lr"].get(key)),
        pct(micro["precision"]), pct(micro["recall"]), pct(micro["f1"]),
        f"lr {lr}",
        f"{r['train_seconds_by_lr'].get(key, 0):.0f}",
        "–", "–",
        f"{r.get('pipeline_sentences_per_second', 0):.0f} (pipeline)",
    ]


LABELS = {"hand": "hand", "hand_sub": "hand", "emb": "emb", "hand_emb": "hand+emb"}
HEAD = ["system", "dev F1", "test P", "test R", "test F1", "chosen", "fit s", "wall s", "peak MB", "tag sent/s"]


def table(rows):
    out = ["| " + " | ".join(HEAD) + " |", "|" + "---|" * len(HEAD)]
    out += ["| " + " | ".join(r) + " |" for r in rows if r]
    return "\n".join(out)


def main():
    dest, sets = sys.argv[1], sys.argv[2:]
    marker = "<!-- notes -->"
    notes = ""
    old = load_text(dest)
    if old and marker in old:
        notes = old[old.index(marker):]
    parts = [
        "# Named-entity recognition: lmfuse's CRFs against sklearn-crfsuite and a Hugging Face fine-tune\n",
        "Made by `bash bench/ner.sh` (and `HF=1` for the fine-tune); entity-level strict micro scores "
        "(seqeval's, IOB2) in %; every system chooses its setting on dev and is scored once on test.",
        f"CPU: {cpu()}. All runs 2 threads. Gold tags that break BIO are read by conlleval's rules "
        "(--repair-bio) for every system.\n",
    ]
    for s in sets:
        d = os.path.join("bench/out/ner", s)
        rows = [lmfuse_row("hand", d), lmfuse_row("hand_sub", d, " (first 10k sentences)"),
                lmfuse_row("emb", d), lmfuse_row("hand_emb", d), crfsuite_row(d), hf_row(d, s)]
        parts.append(f"## {s}\n\n{table(rows)}\n")
    text = "\n".join(parts) + "\n" + (notes or marker + "\n")
    tmp = dest + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, dest)


def load_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError:
        return None


if __name__ == "__main__":
    main()
