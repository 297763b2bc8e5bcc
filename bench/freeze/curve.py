"""Relearning budget curves on the published (UCE: Zorbo + Mossy) toy model, with or without a freeze mask, through
`erasekit.attacks.run_attack("relearn", ..., freeze=...)` and the toy oracle (`toyworld-oracle`). Every run_attack
reports `pre` (detection before the fine-tune = the 0-step point) and `post` (after `steps`).

    python bench/freeze/curve.py --concepts Zorbo,Mossy --masks none,learned,random --steps 20 \
        [--seeds 0,1,2] [--params xattn-kv] [--lr 1e-2] [--prompts 8] [--n-images 4]

Rows are appended to runs/freeze/curves.jsonl as they finish. When a mask freezes every tensor the attack fine-tunes,
the attack refuses to run (nothing to train): the row is then the model without fine-tuning and marked "blocked".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import OUT, cpu_seconds, published_pipe  # noqa: E402



def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--concepts", default="Zorbo,Mossy")
    ap.add_argument("--masks", default="none,learned,random")
    ap.add_argument("--steps", default="20")
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--params", default="xattn-kv")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n-images", type=int, default=4)
    ap.add_argument("--seeds", default="0", help="attack seeds (fine-tune noise, images, prompt seeds)")
    ap.add_argument("--tags", default="", help="mask files fag-TAG.json / random-TAG.json (learn.py --tag), "
                    "comma-separated for several mask seeds; default fag.json / random.json")
    args = ap.parse_args()
    from erasekit.attacks import run_attack
    from erasekit.errors import InvalidValueError

    pipe = published_pipe()
    for concept in args.concepts.split(","):
      for tag in args.tags.split(","):
        suffix = f"-{tag}" if tag else ""
        masks = {"none": None, "learned": OUT / f"fag{suffix}.json", "random": OUT / f"random{suffix}.json"}
        for mask in args.masks.split(","):
            if mask == "none" and tag != args.tags.split(",")[0]:
                continue  # the unguarded model does not depend on the mask
            for steps, seed in [(int(s), int(d)) for s in args.steps.split(",") for d in args.seeds.split(",")]:
                opts = {"params": args.params, "lr": args.lr, "steps": steps, "n_images": args.n_images,
                        "seed": seed}
                if masks[mask] is not None:
                    opts["freeze"] = str(masks[mask])
                t, c = time.perf_counter(), cpu_seconds()
                blocked = False
                try:
                    res = run_attack("relearn", pipe, concept, evaluator="toyworld-oracle", n_prompts=args.prompts,
                                     **opts)
                except InvalidValueError as e:
                    if "freezes every tensor" not in str(e):
                        raise
                    blocked = True
                    opts = {**opts, "steps": 0}
                    opts.pop("freeze")
                    res = run_attack("relearn", pipe, concept, evaluator="toyworld-oracle", n_prompts=args.prompts,
                                     **opts)
                info = res.replay.info if res.replay is not None else {}
                row = {"concept": concept, "mask": mask, "tag": tag, "steps": steps, "seed": seed, "params": args.params,
                       "lr": args.lr,
                       "prompts": args.prompts, "n_images": args.n_images, "blocked": blocked, "pre": res.asr_pre,
                       "post": sum(res.post) / len(res.post), "wall_s": round(time.perf_counter() - t, 1),
                       "cpu_s": round(cpu_seconds() - c, 1), "train_s": info.get("seconds"),
                       "freeze": info.get("freeze"), "final_loss": (info.get("losses") or [None])[-1]}
                print(json.dumps(row), flush=True)
                with open(OUT / "curves.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
