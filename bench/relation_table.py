#!/usr/bin/env python3
"""Table of bench/relation.sh: python3 bench/relation_table.py OUT_DIR SEMEVAL_DIR RESULT.md

Reads OUT_DIR/frozen.json, ft_<lr>.json (lmfuse relation train --json) and hf.json
(bench/relation_hf.py). The kept lmfuse fine-tuned run is the best on dev; its test
predictions (`lmfuse relation predict`, binary from $LMFUSE_BIN or target/release/lmfuse) and
the peer's are also scored by the official Perl scorer, whose macro-F1 is printed beside
lmfuse's own.
"""
import glob
import json
import os
import platform
import re
import subprocess
import sys


def perl_score(scorer, predicted, truth, workdir, name):
    """The official scorer's macro-F1 of `predicted` labels against `truth` labels."""
    key = os.path.join(workdir, f"{name}_key.txt")
    answers = os.path.join(workdir, f"{name}_answers.txt")
    with open(key, "w") as f:
        f.writelines(f"{i + 1}\t{label}\n" for i, label in enumerate(truth))
    with open(answers, "w") as f:
        f.writelines(f"{i + 1}\t{label}\n" for i, label in enumerate(predicted))
    out = subprocess.run(["perl", scorer, answers, key], capture_output=True, text=True, check=True)
    return float(re.search(r"macro-averaged F1 = ([0-9.]+)%", out.stdout).group(1))


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags():
    try:
        flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
    except (OSError, IndexError):
        return "unknown"
    wanted = ["avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"]
    return ", ".join(f for f in wanted if re.search(rf"\b{f}\b", flags))


def main():
    out_dir, semeval, result = sys.argv[1:4]
    test_path = os.path.join(semeval, "test.jsonl")
    scorer = os.path.join(semeval, "semeval2010_task8_scorer-v1.2.pl")
    truth = [json.loads(l)["label"] for l in open(test_path, encoding="utf-8")]
    rows = []
    frozen = os.path.join(out_dir, "frozen.json")
    if os.path.exists(frozen):
        r = json.load(open(frozen))
        rows.append(("lmfuse frozen + LR", f"C {r['train']['c']}", r, "bundle_frozen"))
    tuned = []
    for f in sorted(glob.glob(os.path.join(out_dir, "ft_*.json"))):
        lr = os.path.basename(f)[3:-5]
        r = json.load(open(f))
        tuned.append((r["train"]["dev"]["official_macro_f1"], lr, r))
    best_lr = max(tuned, key=lambda t: t[0])[1] if tuned else None
    for _, lr, r in tuned:
        best = r["train"]["finetune"]["best"]
        kept = " (kept)" if lr == best_lr else ""
        rows.append((f"lmfuse fine-tuned{kept}", f"lr {lr}, epoch {best['epoch']}", r, f"bundle_ft_{lr}"))
    lm = os.environ.get("LMFUSE_BIN", "target/release/lmfuse")
    lines = [
        "# Relation extraction: SemEval-2010 Task 8",
        "",
        "`bash bench/relation.sh` (all-MiniLM-L6-v2; dev = 10 % of train held out by label, seed 13;",
        "everything chosen on dev, test read once for this table). Scores are the official",
        "macro-F1 over the nine relations (direction counted, Other excluded), in %; `perl` is the",
        "official scorer run on the same test predictions.",
        "",
        f"CPU: {cpu_model()}, flags {cpu_flags()}; "
        f"{os.cpu_count()} cores.",
        "",
        "| model | chosen on dev | dev macro-F1 | test macro-F1 | test (perl) | test accuracy | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, choice, r, bundle in rows:
        dev = r["train"]["dev"]["official_macro_f1"]
        test = r["test"]
        perl = "-"
        if ("kept" in name or "frozen" in name) and os.path.exists(scorer):
            pred_path = os.path.join(out_dir, f"{bundle}_test_predictions.jsonl")
            subprocess.run([lm, "-q", "relation", "predict", "--model", os.path.join(out_dir, bundle),
                            "--input", test_path, "--output", pred_path], check=True)
            predicted = [json.loads(l)["label"] for l in open(pred_path)]
            perl = f"{perl_score(scorer, predicted, truth, out_dir, bundle):.2f}"
        lines.append(
            f"| {name} | {choice} | {100 * dev:.2f} | {100 * test['official_macro_f1']:.2f} | {perl} "
            f"| {100 * test['accuracy']:.2f} | {r['train']['total_seconds']:.0f} |"
        )
    hf = os.path.join(out_dir, "hf.json")
    if os.path.exists(hf):
        r = json.load(open(hf))
        perl = "-"
        if os.path.exists(scorer):
            predicted = [l.strip() for l in open(r["predictions"])]
            perl = f"{perl_score(scorer, predicted, truth, out_dir, 'hf'):.2f}"
        for lr, dev in r["dev_by_lr"].items():
            kept = " (kept)" if lr == r["best_lr"] else ""
            test = f"{100 * r['test_macro_f1']:.2f}" if kept else "-"
            lines.append(
                f"| HF AutoModelForSequenceClassification{kept} | lr {lr}, {r['epochs']} epochs "
                f"| {100 * dev:.2f} | {test} | {perl if kept else '-'} "
                f"| {100 * r['test_accuracy']:.2f} | {r['seconds_by_lr'][lr]:.0f} |"
                if kept
                else f"| HF AutoModelForSequenceClassification | lr {lr}, {r['epochs']} epochs "
                f"| {100 * dev:.2f} | - | - | - | {r['seconds_by_lr'][lr]:.0f} |"
            )
    notes = os.path.join(os.path.dirname(result), "relation_notes.md")
    if os.path.exists(notes):
        lines += ["", open(notes).read().rstrip()]
    with open(result, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
