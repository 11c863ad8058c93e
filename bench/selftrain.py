"""Self-training on the rest of train (issue 23): `lmfuse train --unlabeled` against the same
`lmfuse train` without it, and scikit-learn's SelfTrainingClassifier over the same embeddings,
on k labelled examples per class.

For each set, k and seed 1..N: k training examples per class are drawn from train.jsonl and k
per class from dev.jsonl (for C, and for lmfuse's stopping rule; from the rest of train where a
set has no dev file), seeded; the rest of train,
labels dropped, is the unlabelled pool. Every method sees exactly these rows and is scored on
the full test.jsonl. scikit-learn gets lmfuse's embeddings of the same texts (`lmfuse embed`;
equal to sentence-transformers' within the parity tests' tolerance), a LogisticRegression with C
chosen on the same dev among the same grid, and SelfTrainingClassifier's defaults otherwise
(threshold 0.75, up to 10 rounds). Appends one JSON line per run to --log (an interrupted grid
resumes) and writes the table to --out.md."""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.semi_supervised import SelfTrainingClassifier

p = argparse.ArgumentParser()
p.add_argument("--data", default="../shared/data")
p.add_argument("--sets", default="sst2,trec,cr,tweeteval_emotion,chnsenticorp_htl")
p.add_argument("--shots", default="8,16,32,64")
p.add_argument("--seeds", type=int, default=5)
p.add_argument("--bin", default=os.environ.get("LMFUSE_BIN", "target/release/lmfuse"))
p.add_argument("--cache", default="bench/out/selftrain/cache")
p.add_argument("--log", default="bench/out/selftrain/runs.jsonl")
p.add_argument("--out", default="bench/results/selftrain")
p.add_argument("--augment", help="also run `--augment SPEC` (EDA) alone and with self-training, "
               "synonyms from models/thesauri (MyThes for English, Cilin for Chinese)")
a = p.parse_args()
THESAURI = {"chnsenticorp_htl": "models/thesauri/cilin_ex.txt"}
MODELS = {"chnsenticorp_htl": "models/multilingual-e5-small"}
C_GRID = [0.01, 0.03, 0.1, 0.3, 1, 3, 10, 30, 100]


def read(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def sample(rows, k, seed):
    by = defaultdict(list)
    for i, r in enumerate(rows):
        by[str(r["label"])].append(i)
    rng = random.Random(seed)
    out = []
    for label in sorted(by):
        out += rng.sample(by[label], min(k, len(by[label])))
    rng.shuffle(out)
    return out


def write(rows, path, labels=True):
    with open(path, "w") as f:
        for r in rows:
            rec = {"text": r["text"], "label": str(r["label"])} if labels else {"text": r["text"]}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def lmfuse(args):
    out = subprocess.run([a.bin, "-q", *args], capture_output=True, text=True,
                         env={**os.environ, "LMFUSE_CACHE_DIR": a.cache})
    if out.returncode != 0:
        sys.exit(f"lmfuse {' '.join(args)} failed: {out.stderr}")
    return out.stdout


def embed(model, rows, path):
    write(rows, path + ".jsonl", labels=False)
    lmfuse(["embed", "--model", model, "-i", path + ".jsonl", "-o", path + ".npy"])
    return np.load(path + ".npy")


def sklearn_self_training(x, y, xd, yd, xu, xt, yt):
    best = max(C_GRID, key=lambda c: (LogisticRegression(C=c, max_iter=1000).fit(x, y).score(xd, yd), -c))
    model = SelfTrainingClassifier(LogisticRegression(C=best, max_iter=1000))
    model.fit(np.vstack([x, xu]), np.concatenate([y, -np.ones(len(xu), dtype=int)]))
    return float((model.predict(xt) == yt).mean())


def augmented(name, common, base):
    """Test accuracy with `--augment` alone and with self-training too."""
    extra = ["--augment", a.augment, "--thesaurus",
             THESAURI.get(name, "models/thesauri/th_en_US_v2.dat")]
    aug = json.loads(lmfuse(common + extra))
    both = json.loads(lmfuse(common + extra + ["--unlabeled", base + "-pool.jsonl"]))
    return {"augment": aug["test"]["accuracy"], "augment_self_train": both["test"]["accuracy"],
            "augment_added": aug["augmentation"]["added"]}


done = {}
if os.path.exists(a.log):
    for r in read(a.log):
        done[(r["set"], r["k"], r["seed"])] = r
os.makedirs(os.path.dirname(a.log), exist_ok=True)
tmp = tempfile.mkdtemp(prefix="lmfuse-selftrain-")
results = []
for name in a.sets.split(","):
    d = os.path.join(a.data, name)
    model = MODELS.get(name, "models/all-MiniLM-L6-v2")
    train, test = read(f"{d}/train.jsonl"), read(f"{d}/test.jsonl")
    # Without a dev file (trec), dev rows are drawn from train and kept out of the pool.
    dev = read(f"{d}/dev.jsonl") if os.path.exists(f"{d}/dev.jsonl") else None
    labels = sorted({str(r["label"]) for r in train})
    index = {l: i for i, l in enumerate(labels)}
    emb = {}
    for k in map(int, a.shots.split(",")):
        for seed in range(1, a.seeds + 1):
            r = done.get((name, k, seed), {})
            if "plain" in r and (not a.augment or "augment" in r):
                results.append(r)
                continue
            picked = sample(train, k, seed)
            chosen = set(picked)
            if dev is None:
                rest = [i for i in range(len(train)) if i not in chosen]
                dev_idx = [rest[i] for i in sample([train[j] for j in rest], k, 1000 + seed)]
                dev_rows = [train[i] for i in dev_idx]
                chosen |= set(dev_idx)
            else:
                dev_rows = [dev[i] for i in sample(dev, k, 1000 + seed)]
            pool = [r for i, r in enumerate(train) if i not in chosen]
            base = f"{tmp}/{name}-{k}-{seed}"
            write([train[i] for i in picked], base + "-train.jsonl")
            write(dev_rows, base + "-dev.jsonl")
            write(pool, base + "-pool.jsonl", labels=False)
            common = ["train", "--model", model, "--train", base + "-train.jsonl", "--dev",
                      base + "-dev.jsonl", "--test", f"{d}/test.jsonl", "--seed", str(seed),
                      "--json", "--out", base + "-bundle"]
            if "plain" in r:
                r = {**r, **augmented(name, common, base)}
                print(json.dumps(r), flush=True)
                with open(a.log, "a") as f:
                    f.write(json.dumps(r) + "\n")
                results.append(r)
                continue
            t = time.time()
            plain = json.loads(lmfuse(common))
            t_plain = time.time() - t
            t = time.time()
            st = json.loads(lmfuse(common + ["--unlabeled", base + "-pool.jsonl"]))
            t_st = time.time() - t
            if not emb:
                emb["train"] = embed(model, train, f"{tmp}/{name}-train")
                emb["test"] = embed(model, test, f"{tmp}/{name}-test")
            xd = embed(model, dev_rows, base + "-devemb")
            ytr = np.array([index[str(r["label"])] for r in train])
            yt = np.array([index[str(r["label"])] for r in test])
            yd = np.array([index[str(r["label"])] for r in dev_rows])
            pool_idx = [i for i in range(len(train)) if i not in chosen]
            sk = sklearn_self_training(emb["train"][picked], ytr[picked], xd, yd,
                                       emb["train"][pool_idx], emb["test"], yt)
            r = {"set": name, "k": k, "seed": seed, "plain": plain["test"]["accuracy"],
                 "self_train": st["test"]["accuracy"], "sklearn_self_train": sk,
                 "kept_round": st["self_training"]["kept"],
                 "pseudo": st["self_training"]["rounds"][st["self_training"]["kept"]]["pseudo_labelled"],
                 "plain_s": t_plain, "self_train_s": t_st}
            if a.augment:
                r.update(augmented(name, common, base))
            print(json.dumps(r), flush=True)
            with open(a.log, "a") as f:
                f.write(json.dumps(r) + "\n")
            results.append(r)

ks = list(map(int, a.shots.split(",")))
sets = a.sets.split(",")
lines = ["| set | k | plain | self-train | gain (pp) | sklearn SelfTraining | lmfuse − sklearn (pp) | rounds kept (mean) | augment | augment + self-train | best of the three − plain (pp) |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
best = defaultdict(list)
gain = defaultdict(list)
vs = defaultdict(list)
for k in ks:
    for name in sets:
        rs = [r for r in results if r["set"] == name and r["k"] == k]
        if not rs:
            continue
        m = lambda key: np.mean([r[key] for r in rs]) * 100
        s = lambda key: np.std([r[key] for r in rs]) * 100
        gain[k].append(m("self_train") - m("plain"))
        vs[k].append(m("self_train") - m("sklearn_self_train"))
        aug = all("augment" in r for r in rs)
        cells = "| - | - | - |"
        if aug:
            top = max(m("self_train"), m("augment"), m("augment_self_train"))
            best[k].append(top - m("plain"))
            cells = (f"| {m('augment'):.1f} ± {s('augment'):.1f} | {m('augment_self_train'):.1f} ± "
                     f"{s('augment_self_train'):.1f} | {top - m('plain'):+.1f} |")
        lines.append(f"| {name} | {k} | {m('plain'):.1f} ± {s('plain'):.1f} | {m('self_train'):.1f} ± {s('self_train'):.1f} "
                     f"| {m('self_train') - m('plain'):+.1f} | {m('sklearn_self_train'):.1f} ± {s('sklearn_self_train'):.1f} "
                     f"| {m('self_train') - m('sklearn_self_train'):+.1f} | {np.mean([r['kept_round'] for r in rs]):.1f} " + cells)
lines.append("")
for k in ks:
    if gain[k]:
        lines.append(f"k = {k}: self-training {np.mean(gain[k]):+.2f} pp over plain on average over {len(gain[k])} sets; "
                     f"{np.mean(vs[k]):+.2f} pp over scikit-learn's SelfTrainingClassifier"
                     + (f"; the best of self-training, augmentation and both {np.mean(best[k]):+.2f} pp over plain "
                        f"({len(best[k])} sets)." if best[k] else "."))
with open(a.out + ".table.md", "w") as f:
    f.write("\n".join(lines) + "\n")
print("\n".join(lines))
