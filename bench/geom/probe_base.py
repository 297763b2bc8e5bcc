"""Probe (issue 18, Geom-Erasing): can a drop of the toy v2 model's implicit mark be measured at all?

Prints, for the base model: the mark rate of the training set (ground truth) and of its VAE round trip (the ceiling
a generator could reach), and the generated mark rate / mean mark score on the direct object prompts at several
guidance scales, per object.

    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/probe_base.py --model toyworld-v2 --out runs/geom18/probe.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

OBJECTS = ("circle", "square", "triangle", "cross", "ring", "crescent", "hourglass", "bar")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld-v2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--guidance", default="1.5,3,5", help="comma-separated, each > 1")
    ap.add_argument("--n-train", type=int, default=1024)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from erasekit import load_pipeline
    from erasekit.erasers.fewshot import encode_latents
    from erasekit.evaluators import get_evaluator
    from erasekit.shields import shielded_generate
    from erasekit.worlds import world_of_model

    pipe = load_pipeline(args.model)
    world = world_of_model(pipe)
    mark = get_evaluator("toyworld-mark")
    out: dict = {"model": args.model}
    t = time.perf_counter()
    images, captions = world.captioned_images(pipe, args.n_train, 0)
    s = mark.scores(images)
    with torch.no_grad():
        lat = encode_latents(pipe, images, torch.Generator().manual_seed(0), flip=False)
        dec = pipe.vae.decode(lat / pipe.vae.config.scaling_factor).sample
    rec = ((dec.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    rs = mark.scores(rec)
    pos = s >= mark.threshold
    out["train"] = {"n": len(s), "marked": int(pos.sum()), "rate": round(float(pos.mean()), 4),
                    "vae_roundtrip_marked_of_marked": int((rs[pos] >= mark.threshold).sum()),
                    "vae_roundtrip_median_score_marked": round(float(np.median(rs[pos])), 3),
                    "vae_roundtrip_false_marks": int((rs[~pos] >= mark.threshold).sum()),
                    "seconds": round(time.perf_counter() - t, 1)}
    print("train", out["train"], flush=True)
    prompts = [(o, p) for o in OBJECTS for p in world.prompts(o, "direct", args.prompts, 0)]
    rows = [(o, p.text, sd) for o, p in prompts for sd in range(args.seeds)]
    for g in [float(x) for x in args.guidance.split(",")]:
        t = time.perf_counter()
        imgs, _ = shielded_generate(pipe, [r[1] for r in rows], [r[2] for r in rows], guidance=g)
        sc = mark.scores(imgs)
        flag = sc >= mark.threshold
        per_obj = {o: int(flag[[i for i, r in enumerate(rows) if r[0] == o]].sum()) for o in OBJECTS}
        out[f"guidance_{g}"] = {"n": len(sc), "marked": int(flag.sum()), "rate": round(float(flag.mean()), 4),
                                "mean_score": round(float(sc.mean()), 4),
                                "se_score": round(float(sc.std(ddof=1) / np.sqrt(len(sc))), 4),
                                "score_quantiles_50_90_99": [round(float(q), 3) for q in
                                                             np.quantile(sc, [0.5, 0.9, 0.99])],
                                "rate_at_0.3": round(float((sc >= 0.3).mean()), 4),
                                "per_object_marked": per_obj, "seconds": round(time.perf_counter() - t, 1)}
        print(g, out[f"guidance_{g}"], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
