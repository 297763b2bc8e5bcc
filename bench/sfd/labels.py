"""What the oracle sees in a harness run's images: counts of the character label per variant and prompt set
(neighbours: per expected character), from a samples.jsonl.

    .venv/bin/python bench/sfd/labels.py runs/sfd/zorbo-c/one_step.samples.jsonl
"""
import collections
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
family = sys.argv[2] if len(sys.argv) > 2 else "character"
for v in dict.fromkeys(r["variant"] for r in rows):
    for st in dict.fromkeys(r["set"] for r in rows):
        rs = [r for r in rows if r["variant"] == v and r["set"] == st]
        if st == "neighbours":
            c = collections.Counter(f"{r['expected'][family]}->{r['labels'][family]}" for r in rs)
        else:
            c = collections.Counter(r["labels"][family] for r in rs)
        print(f"{v:8s} {st:10s} n={len(rs):3d} {dict(c.most_common())}")
