"""Relabel the generated images of finished `erasekit eval` runs with judge2 and compare with the oracle's labels
recorded in samples.jsonl (per family set). Usage:

    .venv/bin/python bench/world2/agreement.py JUDGE2_DIR OUT_JSON RUN_DIR [RUN_DIR ...]

A RUN_DIR is any folder holding samples.jsonl + cache/ (searched recursively). Per (set kind, family): images, oracle
detection, judge2 detection (argmax), judge2 unsure rate on the target head, agreement of the target head's label
(oracle vs judge2 argmax), agreement on "shows the target", and agreement among judge2-sure images.
"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
from erasekit.toyworld.judge2 import Judge2  # noqa: E402


def rows_and_images(run: Path):
    rows = [json.loads(x) for x in (run / "samples.jsonl").read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r["variant"] == "base"]
    cache = {}
    imgs = []
    for r in rows:
        if r["cache"] not in cache:
            with np.load(run / "cache" / r["cache"]) as z:
                cache[r["cache"]] = z["images"]
        imgs.append(cache[r["cache"]][r["index"]])
    return rows, (np.stack(imgs) if imgs else None)


def main() -> None:
    judge = Judge2.load(sys.argv[1])
    out_json = Path(sys.argv[2])
    runs = [p.parent for a in sys.argv[3:] for p in Path(a).rglob("samples.jsonl") if (p.parent / "cache").is_dir()]
    stats = defaultdict(lambda: defaultdict(float))
    examples = defaultdict(list)
    for run in sorted(set(runs)):
        rows, imgs = rows_and_images(run)
        if imgs is None:
            continue
        probs = judge.probs(imgs)
        for i, r in enumerate(rows):
            fam = r["family"]
            setname = r["set"]
            key = f"{setname}/{fam}"
            target = r["expected"].get(fam, r["target"])
            p = probs[fam][i]
            conf, j = float(p.max()), int(p.argmax())
            j2 = judge.classes[fam][j]
            orc = r["labels"][fam]
            s = stats[key]
            s["n"] += 1
            s["oracle_detect"] += orc == target
            s["judge2_detect"] += j2 == target
            s["unsure"] += conf < judge.unsure_below
            s["agree_label"] += orc == j2
            s["agree_shows"] += (orc == target) == (j2 == target)
            if conf >= judge.unsure_below:
                s["n_sure"] += 1
                s["agree_label_sure"] += orc == j2
            if orc != j2 and len(examples[key]) < 8:
                examples[key].append({"prompt": r["prompt"], "oracle": orc, "judge2": j2, "p": round(conf, 3),
                                      "run": str(run), "cache": r["cache"], "index": r["index"]})
    table = {}
    for key, s in sorted(stats.items()):
        n = s["n"]
        table[key] = {"n": int(n), "oracle_detection": s["oracle_detect"] / n, "judge2_detection": s["judge2_detect"] / n,
                      "judge2_unsure": s["unsure"] / n, "agreement_label": s["agree_label"] / n,
                      "agreement_shows": s["agree_shows"] / n,
                      "agreement_label_sure": (s["agree_label_sure"] / s["n_sure"]) if s["n_sure"] else None}
    out_json.write_text(json.dumps({"judge2": judge.identity()["weights_sha256"], "table": table,
                                    "disagreements": examples}, indent=1))
    print("| set/family | images | oracle det. | judge2 det. | agree (label) | agree (shows) | judge2 unsure | agree (sure) |")
    print("|---|---|---|---|---|---|---|---|")
    for key, t in table.items():
        sure = "" if t["agreement_label_sure"] is None else f"{t['agreement_label_sure']:.3f}"
        print(f"| {key} | {t['n']} | {t['oracle_detection']:.3f} | {t['judge2_detection']:.3f} | {t['agreement_label']:.3f} "
              f"| {t['agreement_shows']:.3f} | {t['judge2_unsure']:.3f} | {sure} |")


if __name__ == "__main__":
    main()
