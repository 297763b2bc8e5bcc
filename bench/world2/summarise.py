"""Oracle detection per family set and seed from the finished per-family runs (results.json by_family).
Usage: .venv/bin/python bench/world2/summarise.py runs/world2"""
import json
import sys
from pathlib import Path

rows = {}
for res in sorted(Path(sys.argv[1]).glob("*-seed*/results.json")):
    run = res.parent.name
    fam, seed = run.rsplit("-seed", 1)
    r = json.loads(res.read_text())
    byf = r["variants"]["base"]["by_family"]
    sets = r.get("sets", {})
    for family, m in byf.items():
        for k, v in m.items():
            if k.startswith("detection_independent"):
                name = family + ("" if k == "detection_independent" else
                                 ("_keyword" if family == "character" else "_indirect"))
                rows.setdefault(name, {})[seed] = v
print("| family set | seed 0 | seed 1 |")
print("|---|---|---|")
for name, by in rows.items():
    print(f"| {name} | {by.get('0', float('nan')):.3f} | {by.get('1', float('nan')):.3f} |")
