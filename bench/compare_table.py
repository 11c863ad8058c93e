"""Writes bench/results/compare.md from `lmfuse compare --json` outputs.

    python3 bench/compare_table.py bench/results/compare.md sst2 trec ...

Reads bench/out/classic/<set>/compare.json (the defaults: members of the learnt combiners
bagged) and, where present, compare-refit.json (`--oof-members refit`), compare-finetune.json
and compare-shared.json for the tables after it. Sets without compare.json are listed as not
run. The notes under the marker line of the existing file are kept.
"""
import datetime
import json
import os
import sys

results, sets = sys.argv[1], sys.argv[2:]
# scikit-learn soft vote of (embeddings + LR, TF-IDF + LR), test accuracy %, from issue 5.
REF = {"sst2": 84.6, "trec": 93.6, "subj": 93.3, "cr": 82.5, "banking77": 94.1,
       "tweeteval_emotion": 76.6, "tweeteval_irony": 69.5, "sms_spam": 98.9}
COLUMNS = ["emb:logreg", "tfidf:logreg", "tfidf+emb:logreg", "hard_vote", "soft_vote",
           "weighted", "stacking", "adaptive", "finetuned"]
HEAD = ["emb", "tfidf", "tfidf+emb", "hard", "soft", "weighted", "stacking", "adaptive",
        "finetuned"]


def load(s, name):
    path = f"bench/out/classic/{s}/{name}"
    return json.load(open(path)) if os.path.exists(path) else None


def best_single(r):
    """Test accuracy % of the best single (non-fusion) model of run `r`."""
    return max(100 * c["test"]["accuracy"] for c in r["candidates"] if c["kind"] == "single")


def table(runs):
    """The leaderboard rows of `runs` ({set: compare JSON}) and the two counts."""
    rows = ["| set | winner (by CV) | winner test % | sklearn soft vote % | Δ pp | best single "
            "member test % | beats best member | " + " | ".join(HEAD) + " |",
            "|---" * (7 + len(HEAD)) + "|"]
    wins = met = 0
    for s, r in runs.items():
        by = {c["name"].split("(")[0]: c for c in r["candidates"]}
        w = r["winner"]
        acc = 100 * w["test"]["accuracy"]
        beats = acc > best_single(r)
        wins += beats
        met += s in REF and acc >= REF[s] - 1e-9

        def cell(n):
            return f"{100 * by[n]['test']['accuracy']:.2f}" if n in by else "-"
        delta = f"{acc - REF[s]:+.2f}" if s in REF else "-"
        rows.append(f"| {s} | {w['name'].split('(')[0]} | {acc:.2f} | {REF.get(s, '-')} | {delta} "
                    f"| {best_single(r):.2f} | {'yes' if beats else 'no'} | "
                    + " | ".join(cell(n) for n in COLUMNS) + " |")
    return rows, met, wins


bagged = {s: load(s, "compare.json") for s in sets}
missing = [s for s, r in bagged.items() if r is None]
bagged = {s: r for s, r in bagged.items() if r is not None}
sets = list(bagged)
refit = {s: load(s, "compare-refit.json") for s in sets}
lines = [f"# Fusion leaderboard ({datetime.date.today()}, {os.cpu_count()} cores)", "",
         "`bash bench/compare.sh`: `lmfuse compare` with its defaults: singles emb:logreg, "
         "tfidf:logreg and tfidf+emb:logreg (feature fusion), and the five ensembles of those "
         "three; C of each member, and of the stacking meta-learner and the adaptive gate, "
         "chosen on dev; the members of the learnt combiners (weighted, stacking, adaptive) "
         "predict with the mean of their 5 fold models (`--oof-members bagged`); every "
         "candidate scored by 5-fold CV accuracy on train (ensembles: combiner fit on "
         "out-of-fold member probabilities of the other folds). *winner* is the best CV "
         "candidate; its test accuracy is what counts. Test accuracy % of every candidate is "
         "shown for reference.", ""]
rows, met, wins = table(bagged)
lines += rows + ["", f"Winner ≥ the scikit-learn soft vote on {met} of {len(sets)} sets; beats "
                 f"the best single member on {wins} of {len(sets)}."]
if missing:
    lines += ["", f"Not run yet (no compare.json): {', '.join(missing)}."]
if all(refit.values()):
    rows, met, wins = table(refit)
    lines += ["", "## Members refit on all of train (`--oof-members refit`)", "",
              "`REFIT=1 bash bench/compare.sh` also runs `compare --oof-members refit` "
              "(bench/out/classic/<set>/compare-refit.json): every member of every ensemble "
              "refit on all of train, as before bagging. Cross-validated accuracy of a "
              "candidate does not depend on this; the combiner's C, chosen on dev with the "
              "members' dev probabilities, can, and with it the CV score and the winner.", ""]
    lines += rows + ["", f"Winner ≥ the scikit-learn soft vote on {met} of {len(sets)} sets; "
                     f"beats the best single member on {wins} of {len(sets)}."]
    lines += ["", "Bagged − refit, test accuracy pp of the learnt combiners:", "",
              "| set | weighted | stacking | adaptive |", "|---|---|---|---|"]
    for s in sets:
        b = {c["name"].split("(")[0]: c for c in bagged[s]["candidates"]}
        r = {c["name"].split("(")[0]: c for c in refit[s]["candidates"]}
        lines.append(f"| {s} | " + " | ".join(
            f"{100 * (b[n]['test']['accuracy'] - r[n]['test']['accuracy']):+.2f}"
            for n in ["weighted", "stacking", "adaptive"]) + " |")
def short(name):
    """A candidate's name without its member list; `+finetuned_shared` (or `+finetuned`) where
    a fine-tuned candidate is one of its members."""
    base = name.split("(")[0]
    members = name[len(base) + 1:-1].split(",") if "(" in name else []
    tuned = [m for m in members if m.startswith("finetuned")]
    return base + "".join("+" + m for m in tuned)


def mixed_table(runs, name):
    """Rows of the runs in `runs` whose ensembles also took the fine-tuned candidate `name`
    as a member (`--finetuned-members`): its alpha (chosen on dev where several were tried),
    and the best such ensemble by CV."""
    rows = [f"| set | alphas tried (dev %) | alpha | {name} CV % | its test % | best ensemble "
            f"with it (by CV) | its CV % | its test % | winner (by CV) | winner test % | "
            f"sklearn soft vote % | Δ pp | run s |", "|---" * 13 + "|"]
    for s, r in runs.items():
        c = next(c for c in r["candidates"] if c["name"] == name)
        mixed = [m for m in r["candidates"] if m["kind"] == "ensemble" and name in m["name"]]
        if not mixed:
            continue
        m = max(mixed, key=lambda m: m["cv_accuracy"])
        w = r["winner"]
        acc = 100 * w["test"]["accuracy"]
        tried = ", ".join(f"{t['alpha']:g} ({100 * t['dev_accuracy']:.2f})"
                          for t in c.get("tried", [])) or "-"
        rows.append(
            f"| {s} | {tried} | {c['selected']['alpha']:g} | "
            f"{100 * c['cv_accuracy']:.2f} | {100 * c['test']['accuracy']:.2f} | "
            f"{short(m['name'])} | {100 * m['cv_accuracy']:.2f} | "
            f"{100 * m['test']['accuracy']:.2f} | {short(w['name'])} | {acc:.2f} | "
            f"{REF.get(s, '-')} | {acc - REF[s]:+.2f} | {r['seconds']:.0f} |")
    return rows


def epochs(candidate, default):
    """The fine-tuning epochs of `candidate`; runs made before compare recorded them (no
    `finetune` object) ran with the script's setting of the time, `default`, marked †."""
    recorded = (candidate.get("finetune") or {}).get("epochs")
    return f"{recorded}" if recorded is not None else f"{default}†"


def candidate_table(runs, name, default_epochs):
    """Rows of one fine-tuned candidate `name` in `runs` ({set: compare JSON})."""
    rows = [f"| set | winner (by CV) | winner test % | sklearn soft vote % | Δ pp | best single "
            f"member test % | {name} CV % | its dev % | its test % | best other by CV | its CV "
            f"% | its test % | epochs | {name} fit s | run s |", "|---" * 15 + "|"]
    for s, r in runs.items():
        w = r["winner"]
        acc = 100 * w["test"]["accuracy"]
        c = next(c for c in r["candidates"] if c["name"] == name)
        other = max((c for c in r["candidates"] if c["name"] != name),
                    key=lambda c: c["cv_accuracy"])
        rows.append(
            f"| {s} | {short(w['name'])} | {acc:.2f} | {REF.get(s, '-')} | "
            f"{acc - REF[s]:+.2f} | {best_single(r):.2f} | "
            f"{100 * c['cv_accuracy']:.2f} ± {100 * c['cv_std']:.2f} | "
            f"{100 * c['dev']['accuracy']:.2f} | {100 * c['test']['accuracy']:.2f} | "
            f"{short(other['name'])} | {100 * other['cv_accuracy']:.2f} | "
            f"{100 * other['test']['accuracy']:.2f} | {epochs(c, default_epochs)} | "
            f"{c['fit_seconds']:.0f} | "
            f"{r['seconds']:.0f} |")
    return rows


finetuned = {s: load(s, "compare-finetune.json") for s in sets}
finetuned = {s: r for s, r in finetuned.items() if r}
if finetuned:
    lines += ["", "## The fine-tuned encoder as a candidate (`--finetune`)", "",
              "`FINETUNE_SETS=\"...\" bash bench/compare.sh` also runs `compare --finetune` on "
              "those sets (bench/out/classic/<set>/compare-finetune.json): the same candidates "
              "plus `finetuned`, all-MiniLM-L6-v2 fine-tuned with a linear head (lr 3e-5, early "
              "stopping on dev), once per fold for its CV score and once on all of train. Fit "
              "seconds: the run on all of train; the CV runs come on top. † runs made before "
              "compare's JSON recorded the epochs, with the script's setting of the time.", ""]
    lines += candidate_table(finetuned, "finetuned", 3)
shared = {s: load(s, "compare-shared.json") for s in sets}
shared = {s: r for s, r in shared.items() if r}
if shared:
    lines += ["", "## The shared hidden layer trained end to end as a candidate "
              "(`--finetune-shared`)", "",
              "`SHARED_SETS=\"...\" bash bench/compare.sh` also runs `compare --finetune-shared "
              "--finetune-epochs E` on those sets (bench/out/classic/<set>/compare-shared.json; "
              "E is `SHARED_EPOCHS`, 2 unless the epochs column says otherwise): "
              "the default candidates plus `finetuned_shared`, all-MiniLM-L6-v2 trained end to "
              "end with the shared hidden layer over TF-IDF and its pooled output (the recipe of "
              "`lmfuse finetune --shared-head`: lr 3e-5, head lr 1e-3, alpha 3 unless several "
              "were tried (the table after this one), early stopping on dev), once per fold for "
              "its CV score and once on all of train. The winner is the best CV candidate of the "
              "whole run. Fit seconds: the run on all of train; the CV runs come on top. † runs "
              "made before compare's JSON recorded the epochs, with the script's setting of the "
              "time.", ""]
    lines += candidate_table(shared, "finetuned_shared", 2)
    mixed = mixed_table(shared, "finetuned_shared")
    if len(mixed) > 2:
        lines += ["", "Where the run had `--finetuned-members` (`SHARED_MEMBERS=1`) and "
                  "several alphas (`SHARED_ALPHAS`): every ensemble also with "
                  "`finetuned_shared` as a member (its out-of-fold probabilities from its "
                  "fold runs; it predicts with its run on all of train), and the head's alpha "
                  "chosen on dev among those tried, each trained on all of train.", ""]
        lines += mixed
    # The bar with every fusion candidate lmfuse offers: the shared run where there is one.
    met = wins = 0
    for s in sets:
        r = shared.get(s) or bagged[s]
        acc = 100 * r["winner"]["test"]["accuracy"]
        met += acc >= REF[s] - 1e-9
        wins += acc > best_single(r)
    lines += ["", f"With `--finetune-shared` where it ran ({', '.join(shared)}) and the default "
              f"candidates elsewhere: winner ≥ the scikit-learn soft vote on {met} of "
              f"{len(sets)} sets; beats the best single member on {wins} of {len(sets)}."]
# Hand-written notes below the marker in the existing file are kept.
NOTES = "<!-- notes: written by hand, kept by bench/compare_table.py -->"
notes = ""
if os.path.exists(results):
    old = open(results).read()
    if NOTES in old:
        notes = old[old.index(NOTES) + len(NOTES):]
text = "\n".join(lines) + "\n\n" + NOTES + notes.rstrip("\n") + "\n"
tmp = results + ".tmp"
with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
os.replace(tmp, results)
print(text)
