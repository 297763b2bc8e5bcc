"""RESTOR for images on the toy world (issue 19; bench/measure19): corrupt the shipped toy model so that prompts for
Zorbo show Mossy (relearn fine-tune of the cross-attention K/V on 8 Mossy images captioned as Zorbo, 60 steps, lr
3e-3), erase Zorbo from the corrupted model with each eraser, measure clean / corrupted / corrupted + eraser through
one harness run (toy oracle). Writes OUT/restor.json, OUT/restor.md, OUT/eval/ (`erasekit report OUT/eval`).

    .venv/bin/python bench/measure19/restor_images.py --out runs/m19/restor-b --limit 4 --esd-steps 50 --inject-lr 3e-3
"""
import argparse
import json

import torch

torch.set_num_threads(1)

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--out", default="runs/m19/restor")
ap.add_argument("--methods", default="uce,rece,esd")
ap.add_argument("--limit", type=int, default=4, help="images per prompt set (direct, unrelated) per concept")
ap.add_argument("--sets", default="direct,unrelated")
ap.add_argument("--esd-steps", type=int, default=50, help="ESD optimiser steps (default option: 200)")
ap.add_argument("--inject-steps", type=int, default=60)
ap.add_argument("--inject-lr", type=float, default=3e-3)
ap.add_argument("--params", default="xattn-kv")
ap.add_argument("--source", default="Zorbo")
ap.add_argument("--donor", default="Mossy")
a = ap.parse_args()

from erasekit.restor_images import RestorImagesConfig, markdown, run_restor_images

cfg = RestorImagesConfig(source=a.source, donor=a.donor, inject_steps=a.inject_steps, inject_lr=a.inject_lr,
                         params=a.params, limit=a.limit, sets=tuple(a.sets.split(",")))
methods = a.methods.split(",")
res = run_restor_images(methods, a.out, cfg, suite="default", options={"esd": {"steps": a.esd_steps}},
                        progress=lambda *x, **k: None)
print(markdown(res))
print(json.dumps(res["corruption"], indent=1)[:2000])
print("seconds", res["seconds"])
