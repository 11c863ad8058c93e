"""bench/results/faq.md from the outputs of bench/faq.sh."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from relation_table import cpu_flags, cpu_model  # noqa: E402


def pct(x):
    return f"{100 * x:.2f}"


def main(d):
    split = json.load(open(f"{d}/split.json"))
    print("# Answer engine: zaragoza construction FAQ (English)\n")
    print(f"Machine: {cpu_model()} ({cpu_flags()}), {os.cpu_count()} cores; `bash bench/faq.sh`; "
          "encoder all-MiniLM-L6-v2; every setting the tool's default.\n")
    print(f"Split (seed {split['seed']}): {split['table_entries']} entries in the table "
          f"({split['train_questions']} with their question); held out: dev {split['dev_in_scope']} in scope + "
          f"{split['dev_out_of_scope']} out of scope, test {split['test_in_scope']} + {split['test_out_of_scope']}; "
          f"out-of-scope categories: {', '.join(split['out_of_scope_categories'])}.\n")
    for target in ["0.8", "0.9"]:
        build = json.load(open(f"{d}/build_{target}.json"))
        test = json.load(open(f"{d}/test_{target}.json"))
        print(f"## Hand-over threshold for precision {target} on dev\n")
        intent = build.get("intent")
        kept = build["ranker_kept"]
        print(f"Build: {build['seconds']:.1f} s; intent classifier C {intent[0]} (held-out accuracy on the table's "
              f"questions {pct(intent[1])} %); ranker kept {json.dumps(kept)}; thresholds (fused, bm25, dense) "
              f"{build['thresholds']} chosen on {build['chosen_on']}.\n")
        print("Test (held-out questions):\n")
        print("| mode | top-1 acc. | MRR@10 | answered | answered precision | hand-over precision | "
              "hand-over recall | out-of-scope handed over | calibration error | intent acc. | p50 ms |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for m in test["modes"]:
            ece = "" if m["calibration_error"] is None else f"{m['calibration_error']:.3f}"
            intent = "" if m["intent_accuracy"] is None else pct(m["intent_accuracy"])
            print(f"| {m['mode']} | {pct(m['top1_accuracy'])} | {pct(m['mrr_at_10'])} | {pct(m['coverage'])} | "
                  f"{pct(m['answered_precision'])} | {pct(m['hand_over_precision'])} | {pct(m['hand_over_recall'])} | "
                  f"{pct(m['out_of_scope_recall'])} | {ece} | {intent} | {m['p50_ms']:.2f} |")
        print()
    print("## A conversation (engine over the whole table, no dev)\n")
    for line in open(f"{d}/conversation.jsonl"):
        a = json.loads(line)
        top = a["answers"][0] if a["answers"] else {}
        print(f"- {a['question']!r} → {top.get('id')} ({top.get('question')!r}); confidence {a['confidence']:.3f}, "
              f"hand over {a['hand_over']}, context used {a['context_used']}")
    print()


if __name__ == "__main__":
    main(sys.argv[1])
