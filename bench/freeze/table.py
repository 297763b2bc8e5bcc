"""Markdown table of runs/freeze/curves.jsonl: per (concept, mask, steps) the post-attack detection per seed and its
mean, with the pre-attack (0-step) detection.  python bench/freeze/table.py [runs/freeze/curves.jsonl]"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1] if len(sys.argv) > 1 else "runs/freeze/curves.jsonl")]
groups: dict[tuple, list[dict]] = defaultdict(list)
for r in rows:
    groups[(r["concept"], r["params"], r["lr"], r["steps"], r["mask"])].append(r)
print("| concept | attacker | steps | mask | pre (0 steps) per seed | post per seed | mean post | mean CPU s |")
print("|---|---|---|---|---|---|---|---|")
for (concept, params, lr, steps, mask), rs in sorted(groups.items()):
    rs = sorted(rs, key=lambda r: r["seed"])
    pre = " / ".join(f"{r['pre']:.3f}" for r in rs)
    post = " / ".join(f"{r['post']:.3f}" for r in rs)
    mean = sum(r["post"] for r in rs) / len(rs)
    cpu = sum(r["cpu_s"] for r in rs) / len(rs)
    print(f"| {concept} | {params} lr {lr:g} | {steps} | {mask} | {pre} | {post} | {mean:.3f} (n={len(rs)}) | "
          f"{cpu:.1f} |")
