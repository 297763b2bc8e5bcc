"""PECCAVI settings on the toy model: PSNR of the marked images and, per attack, mean bit accuracy of marked / clean
images and the AUC of the bit-accuracy score (clean images attacked alike, same seed).

    .venv/bin/python bench/peccavi/sweep.py -n 32 peccavi "peccavi:burnish=false" "peccavi:step=96,band=2,n_nmp=4"

Prompts and seeds are those of `erasekit mark bench` (the world's bench prompts, seeds 0..n-1); one fresh key per
setting (os.urandom), so numbers vary slightly between runs.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

ATTACKS = ("none", "vae", "paraphrase", "paraphrase:strength=0.2", "img2img:strength=0.3", "jpeg:quality=50")


def main() -> None:
    import erasekit
    from erasekit.marks import auc, get_mark
    from erasekit.marks.attacks import apply_attack
    from erasekit.marks.bench import bench_prompts
    from erasekit.worlds import world_of_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("specs", nargs="+", help="peccavi specs")
    ap.add_argument("-n", type=int, default=32)
    ap.add_argument("--model", default="toyworld")
    ap.add_argument("--attack", action="append", help=f"attack spec (repeatable; default {', '.join(ATTACKS)})")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = erasekit.load_pipeline(args.model)
    prompts = [p.text for p in bench_prompts(world_of_model(pipe), args.n, 0)]
    clean = erasekit.generate(pipe, prompts, seeds=list(range(args.n)))
    attacks = args.attack or list(ATTACKS)
    attacked_clean = {a: apply_attack(a, clean, pipe=pipe, seed=0) for a in attacks}
    print("| setting | PSNR dB | " + " | ".join(f"{a} bit acc marked/clean (AUC)" for a in attacks) + " | embed s/img |")
    print("|---|---|" + "---|" * len(attacks) + "---|")
    for spec in args.specs:
        wm = get_mark(spec)
        key = wm.keygen(pipe)
        t = time.time()
        marked = wm.embed_images(key, clean, pipe=pipe)
        embed_s = (time.time() - t) / args.n
        psnr = 10 * np.log10(255 ** 2 / ((marked.astype(np.float64) - clean) ** 2).mean())
        cells = []
        for a in attacks:
            dm = wm.detect(key, apply_attack(a, marked, pipe=pipe, seed=0))
            dc = wm.detect(key, attacked_clean[a])
            cells.append(f"{dm.bit_acc.mean():.3f}/{dc.bit_acc.mean():.3f} ({auc(dc.score, dm.score):.3f})")
        print(f"| {spec} | {psnr:.1f} | " + " | ".join(cells) + f" | {embed_s:.3f} |", flush=True)


if __name__ == "__main__":
    main()
