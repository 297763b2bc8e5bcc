"""Markdown tables of the RESTOR runs of run_all.sh (budget curves, seeds 0-2 median, injection curve).
usage: restor_tables.py  (from the repo root; reads bench/textworld/part2/restor.json and bench/textworld/part3/*.json)"""
import json
from pathlib import Path

import numpy as np

P2, P3 = Path("bench/textworld/part2"), Path("bench/textworld/part3")
f = lambda v, p=2: "" if v is None else f"{v:.{p}f}"
KEYS = ("acc_clean", "acc_corrupt", "other", "recovery", "qa_acc_retain")

print("RESTOR budget curves (recovery vs unlearning steps; seed 0)\n")
print("| method | steps | acc true | acc injected | other | recovery | retain QA | unlearn s |\n|---|---|---|---|---|---|---|---|")
for name in ("restor_budgets_a.json", "restor_budgets_b.json"):
    if (P3 / name).is_file():
        r = json.loads((P3 / name).read_text())
        for m, curve in r["curves"].items():
            for p in curve:
                print(f"| {m} | {p['steps']} | " + " | ".join(f(p.get(k)) for k in KEYS) + f" | {f(p.get('seconds'), 1)} |")

runs = [json.loads((P2 / "restor.json").read_text())] + [json.loads((P3 / f"restor_seed{s}.json").read_text())
                                                          for s in (1, 2) if (P3 / f"restor_seed{s}.json").is_file()]
print(f"\nRESTOR over {len(runs)} seeds (median [min, max]); entities per seed:", [r["entities"] for r in runs], "\n")
print("| state | " + " | ".join(KEYS) + " |\n|---" * 1 + "|---" * len(KEYS) + "|")
for state in runs[0]["states"]:
    cells = []
    for k in KEYS:
        vals = [r["states"][state].get(k) for r in runs if state in r["states"]]
        vals = [v for v in vals if v is not None]
        cells.append("" if not vals else f(float(np.median(vals))) + (f" [{f(min(vals))}, {f(max(vals))}]"
                                                                       if len(vals) > 1 else ""))
    print(f"| {state} | " + " | ".join(cells) + " |")

if (P3 / "restor_inject.json").is_file():
    r = json.loads((P3 / "restor_inject.json").read_text())
    print("\nRESTOR vs the corrupter's budget (injection steps; seed 0)\n")
    print("| inject steps | state | " + " | ".join(KEYS) + " |\n|---|---" + "|---" * len(KEYS) + "|")
    for row in r["injection_curve"]:
        for state, s in row["states"].items():
            print(f"| {row['inject_steps']} | {state} | " + " | ".join(f(s.get(k)) for k in KEYS) + " |")
