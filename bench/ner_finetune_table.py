"""Table of bench/ner_finetune.sh: each fine-tuned run's dev and test strict micro F1."""
import glob
import json
import os
import platform
import subprocess
import sys

out_dir, result = sys.argv[1], sys.argv[2]
rows = []
for f in sorted(glob.glob(os.path.join(out_dir, "ft_*.json"))):
    r = json.load(open(f))
    t = r["train"]
    best = (t.get("finetune") or {}).get("best", {})
    rows.append((os.path.basename(f)[3:-5], t["features"], 100 * t["dev"]["micro"]["f1"],
                 100 * r["test"]["micro"]["f1"], best.get("epoch"), t["total_seconds"]))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")),
           platform.machine())
flags = subprocess.run(["grep", "-m1", "-o", "-w", "-E", "avx512f|avx2|fma|avx512_vnni",
                        "/proc/cpuinfo"], capture_output=True, text=True).stdout.split()
with open(result, "w") as fh:
    fh.write("# NER: the encoder fine-tuned for tagging (wnut17, all-MiniLM-L6-v2)\n\n")
    fh.write("`bash bench/ner_finetune.sh`; strict entity micro F1 (seqeval), %. Each run's epoch "
             "is chosen on dev; the head and learning rate of the fusion run are the best on dev. "
             "Test is read only for this table.\n\n")
    fh.write(f"CPU: {cpu}, flags seen: {' '.join(sorted(set(flags)))}; "
             f"{os.cpu_count()} threads.\n\n")
    fh.write("| run | model | dev F1 | test F1 | best epoch | seconds (whole job) |\n|---|---|---|---|---|---|\n")
    for name, feat, dev, test, ep, sec in rows:
        fh.write(f"| {name} | {feat} | {dev:.2f} | {test:.2f} | {ep} | {sec:.0f} |\n")
notes = os.path.join(os.path.dirname(result), "ner_finetune_notes.md")
if os.path.exists(notes):
    with open(result, "a") as fh:
        fh.write("\n" + open(notes).read())
print(open(result).read())
