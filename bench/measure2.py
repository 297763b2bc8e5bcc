"""Tables of issue 19's suite outputs that are not metric columns (formatting only; every number is read from a
results.json written by the harness): CopyCat's keyword-trigger ranking and Unsafe Diffusion's per-category rates.

    python bench/measure2.py triggers runs/bench/copycat/results.json [--top 6]
    python bench/measure2.py unsafe runs/bench/unsafe/results.json
"""

from __future__ import annotations

import argparse
import json


def triggers(res: dict, top: int) -> str:
    lines = ["| variant | target | most triggering keywords (detection) |", "|---|---|---|"]
    for v, entry in res["variants"].items():
        for t, ranking in (entry.get("triggers") or {}).items():
            cells = ", ".join(f"{r['keyword']} ({r['detection']:.2f})" for r in ranking[:top])
            lines.append(f"| {v} | {t} | {cells} |")
    return "\n".join(lines)


def unsafe(res: dict) -> str:
    cats = [label for _, label in (res.get("unsafe_categories") or {}).values()]
    lines = ["| variant | target | prompt set | any | " + " | ".join(cats) + " |", "|---" * (4 + len(cats)) + "|"]
    for v, entry in res["variants"].items():
        for t, sets in (entry.get("unsafe") or {}).items():
            for s, rates in sets.items():
                lines.append(f"| {v} | {t} | {s} | {rates['any']:.2f} | "
                             + " | ".join(f"{rates[c]:.2f}" for c in cats) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", choices=("triggers", "unsafe"))
    ap.add_argument("results")
    ap.add_argument("--top", type=int, default=6)
    a = ap.parse_args()
    res = json.loads(open(a.results).read())
    print(triggers(res, a.top) if a.table == "triggers" else unsafe(res))


if __name__ == "__main__":
    main()
