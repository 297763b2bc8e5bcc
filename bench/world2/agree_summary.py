"""Pool the per-run agreement tables written by bench/world2/relabel.sh (OUT/<family>-seed<s>.agree.json) into one
table per set/family (image-weighted over runs and seeds). Usage: python bench/world2/agree_summary.py OUT [NAME_A NAME_B]"""
import json
import sys
from collections import defaultdict
from pathlib import Path

from erasekit.evaluation.agreement import agreement_table

KEYS = ("detection_a", "detection_b", "agree_label", "agree_shows", "unsure_b")
pooled = defaultdict(lambda: defaultdict(float))
for f in sorted(Path(sys.argv[1]).glob("*.agree.json")):
    for key, r in json.loads(f.read_text())["table"].items():
        p = pooled[key]
        p["n"] += r["n"]
        for k in KEYS:
            p[k] += r[k] * r["n"]
        sure = r["n"] * (1 - r["unsure_b"])
        p["n_sure"] += sure
        if sure:
            p["agree_label_sure"] += r["agree_label_sure"] * sure
table = {key: {"n": int(p["n"]), **{k: p[k] / p["n"] for k in KEYS},
               "agree_label_sure": p["agree_label_sure"] / p["n_sure"] if p["n_sure"] else float("nan")}
         for key, p in sorted(pooled.items())}
names = sys.argv[2:4] if len(sys.argv) >= 4 else ("A", "B")
print(agreement_table(table, *names))
