"""Memorization on a toy-world v2 model (issue 19): detector AUC and verbatim reproduction vs duplication count.

The model's training set holds memorized image-caption pairs duplicated at known counts (`dataset_v2`, recorded in the
model's manifest). For each count c:
  * detection: AUC of the conditional-magnitude detector (`erasekit.memorization`, Wen et al. 2024) of the pairs'
    captions against fresh captions of the same training grammar (prompts the model saw no duplicate of);
  * reproduction: share of generations from the pair's caption that are verbatim copies of its image (closer to it
    than any of 16 other renderings of the same scene labels; `verbatim_copies`).

    python bench/memorization.py --model runs/train-v2g --out runs/memorization.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a toy-world training folder (manifest.json + pipeline/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--others", type=int, default=64, help="fresh captions the memorized ones are compared with")
    ap.add_argument("--seeds", type=int, default=4, help="generations per prompt (detector and reproduction)")
    ap.add_argument("--refs", type=int, default=16, help="other renderings of each memorized scene")
    ap.add_argument("--first-steps", type=int, default=None, help="detector over the first K steps only")
    a = ap.parse_args()
    from erasekit import generate, load_pipeline
    from erasekit.memorization import prompt_magnitudes, verbatim_copies
    from erasekit.membership import auc
    from erasekit.toyworld.captions_v2 import caption_v2
    from erasekit.toyworld.eval_grammar import protected_pattern
    from erasekit.toyworld.oracle import random_scenes
    from erasekit.toyworld.render import Scene, render

    out = Path(a.out)
    if out.exists():
        raise SystemExit(f"error: {out} exists; choose another --out")
    folder = Path(a.model)
    manifest = json.loads((folder / "manifest.json").read_text())
    mem = manifest["dataset"].get("v2", {}).get("memorized", [])
    if not mem:
        raise SystemExit(f"error: {folder} was trained without memorized pairs (manifest dataset.v2.memorized)")
    pipe = load_pipeline(str(folder / "pipeline"))
    t0 = time.time()
    rng = np.random.default_rng(12345)
    avoid = protected_pattern()
    others = [caption_v2(s, rng, avoid=avoid) for s in random_scenes(a.others, 777)]
    kw = {"first_steps": a.first_steps} if a.first_steps else {}
    d_mem = prompt_magnitudes(pipe, [m["caption"] for m in mem], a.seeds, **kw)
    d_oth = prompt_magnitudes(pipe, others, a.seeds, **kw)
    rows = []
    for m, d in zip(mem, d_mem):
        scene = Scene(**m["scene"])
        original = render(scene)
        refs = np.stack([render(Scene(**{**m["scene"], "seed": 10_000 + j})) for j in range(a.refs)])
        imgs = generate(pipe, [m["caption"]] * a.seeds, list(range(a.seeds)))
        is_copy, dist, thr = verbatim_copies(imgs, original, refs)
        rows.append({"caption": m["caption"], "count": m["count"], "magnitude": float(d),
                     "verbatim_rate": float(is_copy.mean()), "median_rmse": float(np.median(dist)), "threshold": thr})
    by_count = {}
    for c in sorted({r["count"] for r in rows}):
        dm = np.array([r["magnitude"] for r in rows if r["count"] == c])
        by_count[str(c)] = {"pairs": int(len(dm)),
                            "auc": auc(np.r_[dm, d_oth], np.r_[np.ones(len(dm), bool), np.zeros(len(d_oth), bool)]),
                            "verbatim_rate": float(np.mean([r["verbatim_rate"] for r in rows if r["count"] == c])),
                            "median_magnitude": float(np.median(dm))}
    res = {"model": str(folder), "command": "python bench/memorization.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if v is not None),
           "others_median_magnitude": float(np.median(d_oth)), "by_count": by_count, "pairs": rows,
           "seconds": round(time.time() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print("| duplicates | pairs | detector AUC vs fresh captions | verbatim copies | median magnitude |")
    print("|---|---|---|---|---|")
    for c, v in by_count.items():
        print(f"| {c} | {v['pairs']} | {v['auc']:.3f} | {v['verbatim_rate']:.2f} | {v['median_magnitude']:.2f} |")
    print(f"fresh captions: median magnitude {res['others_median_magnitude']:.2f}; {res['seconds']} s")


if __name__ == "__main__":
    main()
