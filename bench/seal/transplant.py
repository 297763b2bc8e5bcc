"""Re-prompt forgery with a *perfect* attacker: the true marked initial latent is regenerated with another prompt
(the upper bound of any proxy-inversion re-prompt attack, Mueller et al. CVPR 2025), for SEAL vs Gaussian Shading.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/seal/transplant.py --n 16 --guidance 2 \
        --prompt "Zorbo in the style of Cora Voss" \
        --method "seal:decoder_steps=50,inversion_prompt=caption,inversion_guidance=2" \
        --method "gaussian_shading:decoder_steps=50,inversion_prompt=caption,inversion_guidance=2,statistic=correlation"

Per method (one fresh key): detection rate under the method's own rule and median score of (a) the marked images,
(b) the transplanted images (the marked latents regenerated with --prompt: forgeries), (c) unmarked images of
--prompt (covers, fresh seeds). SEAL also: patches of the marked latent that the forgery's caption still selects
(no inversion: the pure semantic effect), and the caption-embedding angle between original and forged content.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt", default="Zorbo in the style of Cora Voss")
    ap.add_argument("--method", action="append", default=[])
    args = ap.parse_args()
    torch.set_num_threads(1)
    from erasekit import generate, load_pipeline
    from erasekit.marks import get_mark
    from erasekit.marks._latent import generate_from_latents
    from erasekit.marks.bench import bench_prompts
    from erasekit.marks.seal import semantic_embeddings
    from erasekit.worlds import world_of_model

    pipe = load_pipeline("toyworld")
    world = world_of_model(pipe)
    prompts = [p.text for p in bench_prompts(world, args.n, args.seed)]
    seeds = [args.seed + i for i in range(args.n)]
    clean = generate(pipe, prompts, seeds, guidance=args.guidance)
    caps = world.caption(clean)
    covers = generate(pipe, [args.prompt] * args.n, [args.seed + 1000 + i for i in range(args.n)],
                      guidance=args.guidance)
    for spec in args.method:
        t = time.time()
        mark = get_mark(spec)
        key = mark.keygen(pipe)
        if mark.name == "seal":
            z = mark.initial_latents(key, seeds, semantic_embeddings(pipe, caps))
        else:
            z = mark.initial_latents(key, seeds)
        marked = generate_from_latents(pipe, prompts, seeds, z, guidance=args.guidance)
        forged = generate_from_latents(pipe, [args.prompt] * args.n, seeds, z, guidance=args.guidance)
        row: dict = {"method": spec, "n": args.n, "guidance": args.guidance, "prompt": args.prompt}
        for name, imgs in (("marked", marked), ("forged", forged), ("covers", covers)):
            det = mark.detect(key, imgs, pipe=pipe)
            row[f"rate_{name}"] = float(det.decision.mean())
            row[f"score_{name}"] = round(float(np.median(det.score)), 3)
            if name == "forged" and mark.name == "seal":
                row["forged_captions_are_prompt"] = float(np.mean([c == args.prompt for c in det.extra["captions"]]))
        if mark.name == "seal":
            e_orig = semantic_embeddings(pipe, caps)
            e_forg = semantic_embeddings(pipe, world.caption(forged))
            ang = torch.rad2deg(torch.acos((e_orig * e_forg).sum(1).clamp(-1, 1)))
            exact = mark.score_latents(key, z, e_forg)  # true latent vs the forgery's content: no inversion
            row["angle_deg_median"] = round(float(ang.median()), 1)
            row["shared_patches_exact_median"] = float(np.median(exact.extra["matches"]))
            row["shared_patches_exact_max"] = int(exact.extra["matches"].max())
            row["expected_share_(1-theta/180)^b"] = round(float(((1 - ang / 180) ** mark.config.b).mean()), 4)
            row["exact_latent_forgery_rate"] = float(exact.decision.mean())
        row["seconds"] = round(time.time() - t, 1)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
