"""Learn the FreezeAsGuard mask on the published (UCE: Zorbo + Mossy) toy model, illegal Zorbo, legal Mossy, and a
random control of the same number of tensors; writes runs/freeze/fag.json and runs/freeze/random.json.

    python bench/freeze/learn.py [--lr 1e-3] [--steps 60] [--relearn-steps 30] [--ratio 0.2] [--batch-size 2]
                                 [--n-images 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import ILLEGAL, LEGAL, OUT, cpu_seconds, published_pipe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lr", type=float, default=1e-3, help="relearn_lr = user_lr (the simulated user = the attacker)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--relearn-steps", type=int, default=30)
    ap.add_argument("--ratio", type=float, default=0.2)
    ap.add_argument("--mask-lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--n-images", type=int, default=8)
    ap.add_argument("--candidates", default="", help="fnmatch patterns (comma-separated) restricting the mask's "
                    "domain, e.g. '*attn2.to_k.*,*attn2.to_v.*' (the xattn-kv attacker's tensors)")
    ap.add_argument("--seed", type=int, default=0, help="mask seed (init, images, noise)")
    ap.add_argument("--tag", default="", help="write fag-TAG.json / random-TAG.json (default fag.json / random.json)")
    args = ap.parse_args()
    cands = tuple(c for c in args.candidates.split(",") if c)
    suffix = f"-{args.tag}" if args.tag else ""
    from erasekit.guards.freezeasguard import learn_freeze_mask, random_mask

    pipe = published_pipe()
    t, c = time.perf_counter(), cpu_seconds()
    mask = learn_freeze_mask(pipe, ILLEGAL, [LEGAL], steps=args.steps, relearn_steps=args.relearn_steps,
                             relearn_lr=args.lr, user_lr=args.lr, freeze_ratio=args.ratio, mask_lr=args.mask_lr,
                             batch_size=args.batch_size, n_images=args.n_images, candidates=cands, seed=args.seed)
    wall, cpu = time.perf_counter() - t, cpu_seconds() - c
    mask.save(OUT / f"fag{suffix}.json", overwrite=True)
    ctl = random_mask(pipe, len(mask.frozen), seed=1 + args.seed, candidates=cands)
    ctl.save(OUT / f"random{suffix}.json", overwrite=True)
    kinds = lambda m: sorted({n.split(".")[-2] if n.endswith(("weight", "bias")) else n for n in m.frozen})  # noqa
    summary = {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "frozen": len(mask.frozen),
               "tensors": len(mask.sizes), "share_tensors": round(mask.share_tensors, 4),
               "share_parameters": round(mask.share_parameters, 4),
               "random_share_parameters": round(ctl.share_parameters, 4),
               "soft_above_half": mask.info["soft_above_half"],
               "releaser_first": mask.info["releaser"][:2], "releaser_last": mask.info["releaser"][-2:],
               "frozen_names": list(mask.frozen)}
    print(json.dumps(summary, indent=1))
    (OUT / f"learn-summary{suffix}.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
