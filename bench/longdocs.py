#!/usr/bin/env python3
"""Helper of bench/longdocs.sh (issue 24 point 6: classical training on long documents).

  python bench/longdocs.py build SRC OUT N SET...
      Long documents from the prepared splits SRC/SET/{train,dev,test}.jsonl (written by
      bench/prepare_sets.py): each document joins 20 texts of one label of one set, so a class
      is SET:LABEL (the label alone with one set). OUT/{train,dev,test}.jsonl get N, N/10 and
      N/10 documents, classes in turn; the texts of a train document come from the set's train
      split, those of dev and test documents from its dev and test splits, so no text is shared
      between train and held-out documents. Seeded (same arguments, same files). Prints a JSON
      summary.
  python bench/longdocs.py sklearn DIR C1,C2,...
      scikit-learn on DIR/{train,dev,test}.jsonl with lmfuse's `--features tfidf --head logreg`
      settings: TfidfVectorizer word 1-2 grams + char 2-5 grams, sublinear tf, min_df 1, texts
      NFKC-normalised then lower-cased (lmfuse's TfidfParams::words()/chars()), hstack;
      LogisticRegression (lbfgs, L2) with lmfuse's tol 1e-5 and max_iter 1000, one fit per C on
      train, C chosen on dev by accuracy (the smaller C on ties), test scored with that model.
      Prints one JSON object with the phase timings.
  python bench/longdocs.py table OUT.md RUNS SIZE...
      The Markdown results from RUNS/SIZE/ (see bench/longdocs.sh).
"""
import datetime
import json
import os
import platform
import random
import re
import sys
import time

DOC_TEXTS = 20
SEED = 13


def read_jsonl(path):
    return [json.loads(l) for l in open(path, encoding="utf-8") if l.strip()]


def build(src, out, n, sets):
    n = int(n)
    sizes = {"train": n, "dev": max(1, n // 10), "test": max(1, n // 10)}
    pools = {}  # (class, split) -> texts
    for s in sets:
        for split in sizes:
            for r in read_jsonl(f"{src}/{s}/{split}.jsonl"):
                cls = str(r["label"]) if len(sets) == 1 else f"{s}:{r['label']}"
                pools.setdefault((cls, split), []).append(r["text"])
    classes = sorted({c for c, _ in pools})
    os.makedirs(out, exist_ok=True)
    summary = {"classes": len(classes), "texts_per_document": DOC_TEXTS, "sets": sets}
    for split, count in sizes.items():
        rng = random.Random(f"longdocs-{SEED}-{split}-{n}")
        chars = 0
        with open(f"{out}/{split}.jsonl.tmp", "w", encoding="utf-8") as f:
            for i in range(count):
                cls = classes[i % len(classes)]
                pool = pools.get((cls, split)) or pools[(cls, "train")]
                # Without repeats when the pool allows it (a few labels have fewer than 20
                # dev or test texts).
                texts = (rng.sample(pool, DOC_TEXTS) if len(pool) >= DOC_TEXTS
                         else rng.choices(pool, k=DOC_TEXTS))
                text = "\n".join(texts)
                chars += len(text)
                f.write(json.dumps({"text": text, "label": cls}, ensure_ascii=False) + "\n")
        os.replace(f"{out}/{split}.jsonl.tmp", f"{out}/{split}.jsonl")
        summary[split] = {"documents": count, "mean_chars": round(chars / count)}
    print(json.dumps(summary))


def run_sklearn(d, grid_arg):
    t0 = time.perf_counter()
    import unicodedata

    import numpy as np
    import scipy.sparse as sp
    import sklearn
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def load(path):
        rows = read_jsonl(path)
        return [r["text"] for r in rows], np.array([str(r["label"]) for r in rows])

    (tr_t, tr_y), (dv_t, dv_y), (te_t, te_y) = (load(f"{d}/{p}.jsonl") for p in ("train", "dev", "test"))
    grid = sorted(float(c) for c in grid_arg.split(","))
    t_loaded = time.perf_counter()

    def prep(text):  # lmfuse: NFKC, then lower-case (TfidfParams::nfkc)
        return unicodedata.normalize("NFKC", text).lower()

    word = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                           preprocessor=prep)
    char = TfidfVectorizer(analyzer="char", ngram_range=(2, 5), sublinear_tf=True, min_df=1,
                           preprocessor=prep)
    x_tr = sp.hstack([word.fit_transform(tr_t), char.fit_transform(tr_t)]).tocsr()
    x_dv = sp.hstack([word.transform(dv_t), char.transform(dv_t)]).tocsr()
    x_te = sp.hstack([word.transform(te_t), char.transform(te_t)]).tocsr()
    t_vec = time.perf_counter()
    trials, best = [], None
    for c in grid:
        t = time.perf_counter()
        m = LogisticRegression(C=c, tol=1e-5, max_iter=1000).fit(x_tr, tr_y)
        fit_s = time.perf_counter() - t
        acc = float((m.predict(x_dv) == dv_y).mean())
        trials.append({"c": c, "dev_accuracy": acc, "fit_seconds": round(fit_s, 3),
                       "n_iter": int(np.max(m.n_iter_))})
        if best is None or acc > best[1]:
            best = (c, acc, m)
    t_fit = time.perf_counter()
    c, dev_acc, m = best
    test_acc = float((m.predict(x_te) == te_y).mean())
    t_end = time.perf_counter()
    print(json.dumps({
        "sklearn": sklearn.__version__, "python": platform.python_version(),
        "c": c, "dev_accuracy": dev_acc, "test_accuracy": test_acc,
        "n_features": {"word": len(word.vocabulary_), "char": len(char.vocabulary_)},
        "nnz_train": int(x_tr.nnz), "dtype": str(x_tr.dtype),
        "seconds": {"import_load": t_loaded - t0, "vectorize": t_vec - t_loaded,
                    "c_search": t_fit - t_vec, "test": t_end - t_fit, "total": t_end - t0},
        "trials": trials,
    }))


def cpu_info():
    model, flags = "unknown", set()
    for line in open("/proc/cpuinfo", encoding="utf-8"):
        if line.startswith("model name") and model == "unknown":
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
    wanted = sorted(f for f in flags if f in ("avx2", "fma") or f.startswith("avx512")
                    or "vnni" in f or f.startswith("amx"))
    return model, wanted, os.cpu_count()


def read_time(path):
    """Wall seconds and peak RSS (MB) from `/usr/bin/time -f '%e %M'`."""
    last = open(path, encoding="utf-8").read().split("\n")
    wall, kb = [l for l in last if re.fullmatch(r"[0-9.]+ [0-9]+", l.strip())][-1].split()
    return float(wall), int(kb) / 1024


def read_load(path):
    """The load averages `timed` appended to a time file (before -> after)."""
    loads = [l[5:] for l in open(path, encoding="utf-8").read().split("\n") if l.startswith("load ")]
    return loads[-1] if loads else "?"


def idf_dims(bundle):
    """Columns of each TF-IDF block of a bundle, from the safetensors header."""
    path = f"{bundle}/weights.safetensors"
    if not os.path.exists(path):
        return {}
    with open(path, "rb") as f:
        header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
    return {k.split(".")[0].replace("tfidf_", ""): v["shape"][0]
            for k, v in header.items() if k.endswith(".idf")}


def table(out, runs, sizes):
    model, flags, cpus = cpu_info()
    meta = json.load(open(f"{runs}/meta.json", encoding="utf-8"))
    validation = sizes == ["1000"]
    lines = [
        "# Classical training on long documents: lmfuse vs scikit-learn (issue 24, point 6)",
        "",
        f"{datetime.date.today()}, `bash bench/longdocs.sh`"
        + (" with `SIZES=1000`: **1k only, validation run** (5k and 20k not run yet)." if validation else "."),
        "",
        f"CPU: {model}, {cpus} cores; flags: {', '.join(flags) or 'none of avx2/fma/avx512*/vnni'}.",
        f"lmfuse: `{meta['lmfuse']}` ({meta['lmfuse_version']}); scikit-learn run by `{meta['python']}`"
        f" ({meta['sklearn']}).",
        "",
        f"Documents: each joins {DOC_TEXTS} texts of one label of one set (`\\n` between them), from "
        f"the shared sets {', '.join(meta['sets'])}; a class is `set:label`. Train documents take "
        "their texts from the sets' train splits, dev and test documents from the dev and test "
        "splits (trec has none: a seeded 10% of its train, as bench/prepare_sets.py makes), so "
        "held-out documents share no text with training ones. N train documents, N/10 dev, N/10 "
        "test; classes in turn.",
        "",
        "Same settings on both sides: word 1-2-grams + character 2-5-grams, sublinear tf, min_df 1, "
        "NFKC + lower-case, L2 rows, side by side; multinomial logistic regression (L-BFGS, L2, "
        "tol 1e-5, max_iter 1000), one fit per C of 0.01,0.03,0.1,0.3,1,3,10,30,100 on the train "
        "documents, C chosen by dev accuracy (the smaller on ties), test accuracy of that model. "
        "scikit-learn keeps its default float64 matrix (what a user gets). Wall time and peak "
        "RSS (maximum resident set size) of each whole process by `/usr/bin/time -f '%e %M'`; "
        "phase times from each tool's own clock (lmfuse `--json` report: `features` = fit "
        "TF-IDF + transform train/dev/test, `fit` = the C search; the rest of its wall time is "
        "reading and saving the bundle). lmfuse uses every core (rayon); scikit-learn's lbfgs fit "
        "runs on one (scipy's sparse products are single-threaded). The word columns may differ "
        "by a few: lmfuse keeps one-character Han words (jieba) and counts combining marks "
        "(e.g. U+0301, the NFKC form of a stray `´`) as word characters, Python's `re` `\\w` does not.",
        "",
        "| size | tool | wall s | peak MB | vectorise s | C search s | test acc | C | word / char columns |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for n in sizes:
        d = f"{runs}/{n}"
        docs = json.load(open(f"{d}/docs.json", encoding="utf-8"))
        lj = json.load(open(f"{d}/lmfuse-train.json", encoding="utf-8"))
        sk = json.load(open(f"{d}/sklearn.json", encoding="utf-8"))
        lw, lm_mb = read_time(f"{d}/lmfuse-train.time")
        sw, sk_mb = read_time(f"{d}/sklearn.time")
        dims = idf_dims(f"{d}/lmfuse-model")
        la = lj["test"]["accuracy"]
        lsel = lj.get("selected", {}).get("value")
        lines.append(
            f"| {n} | lmfuse train | {lw:.1f} | {lm_mb:.0f} | {lj['seconds']['features']:.1f} | "
            f"{lj['seconds']['fit']:.1f} | {100 * la:.2f} | {lsel:g} | "
            f"{dims.get('word', 0):,} / {dims.get('char', 0):,} |")
        lines.append(
            f"| {n} | scikit-learn | {sw:.1f} | {sk_mb:.0f} | {sk['seconds']['vectorize']:.1f} | "
            f"{sk['seconds']['c_search']:.1f} | {100 * sk['test_accuracy']:.2f} | {sk['c']:g} | "
            f"{sk['n_features']['word']:,} / {sk['n_features']['char']:,} |")
        lines.append(
            f"| {n} | **lmfuse / sklearn** | **{lw / sw:.2f}×** | **{lm_mb / sk_mb:.2f}×** | "
            f"{lj['seconds']['features'] / sk['seconds']['vectorize']:.2f}× | "
            f"{lj['seconds']['fit'] / sk['seconds']['c_search']:.2f}× | "
            f"{100 * (la - sk['test_accuracy']):+.2f} pp | | |")
        if os.path.exists(f"{d}/compare.time"):
            cw, c_mb = read_time(f"{d}/compare.time")
            cj = json.load(open(f"{d}/compare.json", encoding="utf-8"))
            win = cj.get("winner", {})
            acc = win.get("test", {}).get("accuracy")
            lines.append(
                f"| {n} | lmfuse compare (tfidf:logreg, 5-fold CV) | {cw:.1f} | {c_mb:.0f} | | | "
                f"{'' if acc is None else f'{100 * acc:.2f}'} | | |")
            lines.append(f"| {n} | **compare / train peak** | {cw / lw:.2f}× | **{c_mb / lm_mb:.2f}×** | | | | | |")
        ltr = ", ".join(f"{t['value']:g}: {t['fit_seconds']:.1f}" for t in lj.get("trials", []))
        load = "; ".join(f"{what} {read_load(f'{d}/{f}.time')}" for what, f in
                         (("lmfuse train", "lmfuse-train"), ("scikit-learn", "sklearn"),
                          ("compare", "compare")) if os.path.exists(f"{d}/{f}.time"))
        str_ = ", ".join(f"{t['c']:g}: {t['fit_seconds']:.1f} ({t['n_iter']} it)" for t in sk["trials"])
        notes.append(f"- {n}: {docs['train']['documents']:,} / {docs['dev']['documents']:,} / "
                     f"{docs['test']['documents']:,} documents of {docs['train']['mean_chars']:,} "
                     f"characters on average, {docs['classes']} classes; scikit-learn train "
                     f"matrix nnz {sk['nnz_train']:,} ({sk['dtype']}).\n"
                     f"  - lmfuse fit seconds per C: {ltr}\n"
                     f"  - scikit-learn fit seconds per C: {str_}\n"
                     f"  - load averages (1, 5, 15 min) before -> after: {load}")
    peak_load = max((float(x) for n in sizes for f in ("lmfuse-train", "sklearn", "compare")
                     if os.path.exists(f"{runs}/{n}/{f}.time")
                     for x in read_load(f"{runs}/{n}/{f}.time").replace("->", " ").split()[::3]
                     if x != "?"), default=0.0)
    if peak_load > cpus:
        lines += ["", f"**Shared machine:** the 1-minute load average reached {peak_load:.2f} on "
                  f"{cpus} cores during these runs (each tool itself uses 1-2 threads), so "
                  "something else was running: the timings are noisy, and each tool may have had "
                  "one core only."]
    lines += ["", "Acceptance (issue 24): lmfuse/sklearn wall ≤ 0.7× and peak ≤ 1.0× at every size; "
              "compare/train peak ≤ 1.5×.", "", "Per size:", ""] + notes
    lines += ["", "Commands (per size N, from the repository root):", "", "```sh"]
    lines += open(f"{runs}/commands.txt", encoding="utf-8").read().rstrip("\n").split("\n")
    lines += ["```", ""]
    text = "\n".join(lines)
    with open(out + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(out + ".tmp", out)
    print(text)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "build":
        build(args[0], args[1], args[2], args[3:])
    elif cmd == "sklearn":
        run_sklearn(*args)
    elif cmd == "table":
        table(args[0], args[1], args[2:])
    else:
        sys.exit(__doc__)
