"""Replays an NDJSON stream into a running `lmfuse monitor run` at full speed and reports the
sustained rate (first request to the last event classified), the acknowledgement latency of each
request (p50/p99) and the monitor's RSS before and after.

    python3 bench/monitor_replay.py URL STREAM PID [--batch 500] [--clients 1]

With several clients, each sends every Nth request over its own connection, all at once; the
RSS is also sampled after every tenth of the requests.
"""

import argparse
import http.client
import json
import threading
import time
import urllib.parse


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("stream")
    p.add_argument("pid", type=int)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--clients", type=int, default=1)
    a = p.parse_args()
    u = urllib.parse.urlparse(a.url)
    lines = [l for l in open(a.stream, encoding="utf-8") if l.strip()]
    bodies = ["".join(lines[i : i + a.batch]).encode() for i in range(0, len(lines), a.batch)]
    rss_start = rss_mb(a.pid)
    latencies, samples, errors, lock = [], [], [], threading.Lock()
    sent = [0]

    def client(k):
        try:
            send(k)
        except Exception as e:  # a refused request ends the replay, not just its thread
            errors.append(repr(e))

    def send(k):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
        for body in bodies[k :: a.clients]:
            t = time.perf_counter()
            conn.request("POST", "/events", body, {"Content-Type": "application/x-ndjson"})
            r = conn.getresponse()
            answer = r.read()
            assert r.status == 200, answer
            with lock:
                latencies.append(time.perf_counter() - t)
                sent[0] += 1
                if sent[0] % max(1, len(bodies) // 10) == 0:
                    samples.append({"requests": sent[0], "rss_mb": rss_mb(a.pid)})

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit("replay failed: " + errors[0])
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
    acked = time.perf_counter() - started
    processed_samples, next_tenth = [], 1
    while True:
        conn.request("GET", "/health")
        h = json.loads(conn.getresponse().read())["monitor"]
        while h["classified"] >= next_tenth * len(lines) / 10 and next_tenth <= 10:
            processed_samples.append({"classified": h["classified"], "rss_mb": rss_mb(a.pid)})
            next_tenth += 1
        if h["classified"] >= len(lines):
            break
        time.sleep(0.05)
    done = time.perf_counter() - started
    latencies.sort()
    q = lambda f: latencies[min(len(latencies) - 1, int(f * len(latencies)))] * 1000
    print(json.dumps({
        "events": len(lines), "batch": a.batch, "clients": a.clients, "requests": len(latencies),
        "ingest_events_per_s": len(lines) / acked,
        "sustained_events_per_s": len(lines) / done,
        "ack_ms_p50": q(0.5), "ack_ms_p99": q(0.99), "ack_ms_max": latencies[-1] * 1000,
        "rss_mb_start": rss_start, "rss_mb_end": rss_mb(a.pid), "rss_samples": samples,
        "rss_processed_samples": processed_samples,
        "seconds": done,
    }))


if __name__ == "__main__":
    main()
