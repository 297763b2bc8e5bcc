"""Binding probe (issue 18, session 8): train one Geom-Erasing edit on data.npz with the given options and measure how
strongly its tokens steer the UNet (`neg_strength.measure`: the negative's pull in the mark band as a share of the
guidance direction). Each run appends one record to --out/bind.jsonl and saves the edit as --out/<tag>.safetensors
(reused when present, e.g. by `run.py --parts persist:<tag>` with the same --out).

    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/bind_probe.py --out runs/geom-s8 --tag before \
        --set token_position=before
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))


def parse(value: str):
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value.lower(), value)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld-v2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--data", default="runs/geom18/data.npz")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--set", action="append", default=[], help="eraser option NAME=VALUE (repeatable)")
    ap.add_argument("--n", type=int, default=16, help="marked images of the binding check")
    args = ap.parse_args()
    torch.set_num_threads(1)
    from neg_strength import measure

    from erasekit import load_pipeline
    from erasekit.edits import Edit
    from erasekit.erasers import erase
    from erasekit.erasers.geom_erasing import GeomHooks

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(args.model)
    options = dict(detector="toyworld-mark", data=args.data, steps=args.steps, seed=0, checkpoint_every=50)
    options.update({k: parse(v) for k, v in (s.split("=", 1) for s in args.set)})
    path = out / f"{args.tag}.safetensors"
    rec: dict = {"tag": args.tag, "options": options}
    t, c = time.perf_counter(), time.process_time()
    if path.exists():
        edit = Edit.load(path, pipe=pipe)
        rec["reused"] = True
    else:
        edit = erase(pipe, "geom_erasing", erase=["mark"],
                     hooks=GeomHooks(checkpoint_dir=str(out / f"ckpt-{args.tag}"), progress=False), **options)
        edit.save(path)
        losses = edit.manifest["info"]["train"]["losses"]
        rec.update(train_s=edit.manifest["info"]["train"]["seconds"], erase_wall_s=round(time.perf_counter() - t, 1),
                   erase_cpu_s=round(time.process_time() - c, 1), tensors=len(edit.names),
                   loss_first20=round(sum(losses[:20]) / 20, 4), loss_last20=round(sum(losses[-20:]) / 20, 4))
    rec["binding"] = measure(pipe, edit, args.data, args.n)
    rec["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    rec["cpu_s_total"] = round(time.process_time() - c, 1)
    with open(out / "bind.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps({k: v for k, v in rec.items()}), flush=True)


if __name__ == "__main__":
    main()
