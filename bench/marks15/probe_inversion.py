"""Probe (issue 15): which detector-side inversion recovers the toy model's initial latents?

Images are generated with the model's defaults (25 DDIM steps, guidance 5) from the bench's prompts (the world's
unrelated-prompt pool, as `erasekit mark bench` draws them) and seeds 0..n-1. For each inversion setting the script
prints the correlation and sign agreement between recovered and true initial latents, starting from the VAE encoder
mean of the uint8 image (what a detector sees) and, for reference, from the true final latent (no VAE).

Settings: prompt empty / given (the generation prompt: an upper bound, a detector does not know it) / caption (the toy
world's captioner, from the oracle's labels); inversion guidance 1 (conditional) or 5 (CFG, = generation);
fixed-point iterations per step; decoder inversion steps.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/marks15/probe_inversion.py --n 6 \
    --configs given:5:3,given:5:0,given:1:3 --true-configs given:5:3
"""
import argparse
import time

import numpy as np
import torch

torch.set_num_threads(1)
import erasekit  # noqa: E402
from erasekit.marks._latent import decoder_invert, encode_images, invert_latents  # noqa: E402
from erasekit.marks.bench import bench_prompts  # noqa: E402
from erasekit.sampling import cfg_combine, decode, denoise, encode_prompts, initial_latents  # noqa: E402
from erasekit.worlds import world_of_model  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--configs", default="empty:1:0,given:1:0,given:1:3,given:5:0,given:5:3,given:5:8,caption:1:3,"
                                     "caption:5:3")
ap.add_argument("--decoder-steps", default="0", help="comma-separated decoder-inversion step counts (0: none)")
ap.add_argument("--gen-guidance", type=float, default=5.0, help="generation guidance (model default 5)")
ap.add_argument("--true-configs", default="", help="configs also inverted from the true final latents")
args = ap.parse_args()

pipe = erasekit.load_pipeline("toyworld")
world = world_of_model(pipe)
ps = bench_prompts(world, args.n, 0)
prompts = [p.text for p in ps]
seeds = list(range(args.n))
t0 = time.time()
with torch.no_grad():
    z_init = initial_latents(pipe, seeds).double()
    cond, unc = encode_prompts(pipe, prompts), encode_prompts(pipe, [""] * args.n)
    z_fin = denoise(pipe, [unc, cond], cfg_combine(args.gen_guidance), seeds, steps=25)
    images = decode(pipe, z_fin)
    z_enc = encode_images(pipe, images)
caps = world.caption(images)
print(f"generation guidance {args.gen_guidance}; generated + encoded {args.n} images in {time.time() - t0:.1f} s")
print(f"caption == prompt: {np.mean([c == p for c, p in zip(caps, prompts)]):.2f}")
for p, c in zip(prompts, caps):
    print(f"  prompt {p!r:50s} caption {c!r}")
starts = {"VAE encoder": z_enc}
for ds in [int(x) for x in args.decoder_steps.split(",") if int(x) > 0]:
    t = time.time()
    starts[f"decoder inv {ds}"] = decoder_invert(pipe, images, z_enc, ds)
    print(f"decoder inversion {ds} steps {time.time() - t:.1f} s")
runs = [(c, name, z) for c in args.configs.split(",") if c for name, z in starts.items()]
runs += [(c, "true final latent", z_fin) for c in args.true_configs.split(",") if c]
for cfg, name, z in runs:
    which, g, fp = cfg.split(":")
    texts = {"empty": [""] * args.n, "given": prompts, "caption": caps}[which]
    if True:
        t = time.time()
        x = invert_latents(pipe, z, texts, 25, float(g), int(fp)).double()
        corr = np.corrcoef(x.flatten(), z_init.flatten())[0, 1]
        sign = ((x > 0) == (z_init > 0)).float().mean().item()
        print(f"prompt {which:7s} guidance {g} fixed-point {fp:>2s} from {name:18s} corr {corr:.3f} "
              f"sign {sign:.3f}  ({time.time() - t:.1f} s)", flush=True)
