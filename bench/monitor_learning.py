"""Helpers of bench/monitor_learning.sh.

    python3 bench/monitor_learning.py shift STREAM SOURCE_TRAIN NEW_TRAIN SHIFT_DAY OUT TRUTH
        Replaces the text of every event from SHIFT_DAY on (days after the stream's first
        event) with a text of NEW_TRAIN of the same label (seeded); writes the events and each
        event's true label (JSON: id -> label).
    python3 bench/monitor_learning.py feedback URL OUT TRUTH N
        Sends the true labels of the first N events after the shift to POST /feedback.
    python3 bench/monitor_learning.py flip TRAIN OUT
        TRAIN with its two labels swapped (a deliberately worse challenger's data).
    python3 bench/monitor_learning.py report DIR [OLD NEW]
        The markdown results of DIR.
"""

import datetime
import http.client
import json
import random
import sys
import urllib.parse


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def shift(stream, source_train, new_train, shift_day, out, truth):
    label_of = {r["text"]: r["label"] for r in read_jsonl(source_train)}
    by_label = {}
    for r in read_jsonl(new_train):
        by_label.setdefault(r["label"], []).append(r["text"])
    events = read_jsonl(stream)
    epoch = lambda e: e["time"] if isinstance(e["time"], int) else int(
        datetime.datetime.fromisoformat(e["time"].replace("Z", "+00:00")).timestamp())
    start = min(epoch(e) for e in events)
    cut = start - start % 86400 + int(shift_day) * 86400
    rng = random.Random(11)
    labels = {}
    shifted = 0
    for e in events:
        label = label_of[e["text"]]
        if epoch(e) >= cut:
            e["text"] = rng.choice(by_label[label])
            e["shifted"] = True
            shifted += 1
        labels[e["id"]] = label
    with open(out, "w", encoding="utf-8") as f:
        for e in events:
            f.write(json.dumps(e, ensure_ascii=False) + "\n")
    json.dump({"labels": labels, "shift": cut, "shifted": shifted}, open(truth, "w"))


def feedback(url, out, truth, n):
    t = json.load(open(truth))
    events = [e for e in read_jsonl(out) if e.get("shifted")][: int(n)]
    body = [{"id": e["id"], "label": t["labels"][e["id"]]} for e in events]
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    conn.request("POST", "/feedback", json.dumps(body).encode(), {"Content-Type": "application/json"})
    r = conn.getresponse()
    answer = r.read().decode()
    assert r.status == 200, answer
    print(answer)


def flip(train, out):
    rows = read_jsonl(train)
    labels = sorted({r["label"] for r in rows})
    assert len(labels) == 2, labels
    with open(out, "w", encoding="utf-8") as f:
        for r in rows:
            r["label"] = labels[1] if r["label"] == labels[0] else labels[0]
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def fmt(v, digits=3):
    return "–" if v is None else f"{v:.{digits}f}"


def report(d, old="waimai_10k", new="chnsenticorp_htl"):
    out = []
    for kind in ["tfidf", "emb"]:
        try:
            drift = json.load(open(f"{d}/drift-{kind}.json"))["sentiment"]
        except FileNotFoundError:
            continue
        truth = json.load(open(f"{d}/truth.json"))
        alerts = [json.loads(l) for l in open(f"{d}/alerts-{kind}.jsonl")]
        drift_alerts = [a for a in alerts if a["rule"] == "drift"]
        out.append(f"### {kind}: drift per day (shift on day {(truth['shift'] - min(w['window'] for w in drift['windows'])) // 86400})\n")
        out.append("| day | events | PSI labels | PSI confidence | centroid distance | 1 − cos of centroids | drifted | alerts |")
        out.append("|---|---|---|---|---|---|---|---|")
        for w in sorted(drift["windows"], key=lambda w: w["window"]):
            f = w["figures"] or {}
            raised = ", ".join(a["metric"] for a in drift_alerts if a["window"] == w["window"])
            mark = " (shifted)" if w["window"] >= truth["shift"] else ""
            out.append(f"| {w['window_start'][:10]}{mark} | {w['n']} | {fmt(f.get('psi_labels'))} "
                       f"| {fmt(f.get('psi_confidence'))} | {fmt(f.get('centroid_distance'))} "
                       f"| {fmt(f.get('centroid_shift'), 4)} "
                       f"| {'yes' if w['drifted'] else 'no'} | {raised} |")
        out.append("")
        first = min((a["window"] for a in drift_alerts), default=None)
        before = [a for a in drift_alerts if a["window"] < truth["shift"]]
        out.append(f"First drift alert: {'none' if first is None else json.dumps(first)} "
                   f"(shift at {truth['shift']}); drift alerts before the shift: {len(before)}.\n")
        for name in ["retrain", "retrain-worse"]:
            r = json.load(open(f"{d}/{name}-{kind}.json"))
            out.append(f"**{name}** ({kind}): challenger v{r['challenger_version']} "
                       f"{'promoted' if r['promoted'] else 'refused'}: {r['reason']}; feedback "
                       f"{r['feedback_train']} trained on, {r['feedback_holdout']} held out.\n")
            out.append("| model | held-out feedback | original test | combined |")
            out.append("|---|---|---|---|")
            for side in ["champion", "challenger"]:
                s = r[side]
                out.append(f"| {side} | {fmt(s['feedback'], 4)} | {fmt(s['test'], 4)} | {fmt(s['combined'], 4)} |")
            out.append("")
        ev = json.load(open(f"{d}/eval-{kind}.json"))
        out.append(f"Accuracy on the new domain's own test set ({new} test, never seen by either): "
                   f"v1 {ev['v1']:.4f}, v2 {ev['v2']:.4f}; on {old} test: v1 {ev['v1_old']:.4f}, v2 {ev['v2_old']:.4f}. "
                   f"Serving after the retrains: v{ev['serving']}.\n")
    print("\n".join(out))


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    {"shift": shift, "feedback": feedback, "flip": flip, "report": report}[cmd](*args)
