"""Probe (issue 15): is the toy model's guided DDIM sampler invertible at all? From the TRUE final latents of 6
images (25 steps, guidance 5, bench prompts), invert with the generation prompt and guidance 5 using k fixed-point
iterations per step (optionally damped), then (a) compare the recovered initial latent with the true one
(correlation, sign agreement) and (b) re-run the sampler from the recovered latent and compare its final latent with
the true final latent (relative error): (b) small but (a) poor means the sampler maps different initial latents to
the same output (contraction), so no inversion can recover the mark from its output.

Run: OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/marks15/probe_fixedpoint.py --n 6
"""
import argparse
import time

import numpy as np
import torch

torch.set_num_threads(1)
import erasekit  # noqa: E402
from erasekit.marks._latent import invert_latents  # noqa: E402
from erasekit.marks.bench import bench_prompts  # noqa: E402
from erasekit.sampling import cfg_combine, denoise, encode_prompts, initial_latents  # noqa: E402
from erasekit.worlds import world_of_model  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--guidance", type=float, default=5.0)
ap.add_argument("--fp", default="0,3,10,30")
args = ap.parse_args()
pipe = erasekit.load_pipeline("toyworld")
prompts = [p.text for p in bench_prompts(world_of_model(pipe), args.n, 0)]
seeds = list(range(args.n))
g = args.guidance
with torch.no_grad():
    cond, unc = encode_prompts(pipe, prompts), encode_prompts(pipe, [""] * args.n)

    def sample(z):
        if g == 1.0:
            return denoise(pipe, [cond], lambda i, t, e: e[0], seeds, steps=25, latents=z)
        return denoise(pipe, [unc, cond], cfg_combine(g), seeds, steps=25, latents=z)

    z_init = initial_latents(pipe, seeds)
    z_fin = sample(z_init)
    # sensitivity: how far apart are the outputs of two different initial latents (same prompt)?
    other = sample(torch.randn(z_init.shape, generator=torch.Generator().manual_seed(99)))
    print(f"guidance {g}: |out(z') - out(z)| / |out(z)| for an unrelated z' = "
          f"{float((other - z_fin).norm() / z_fin.norm()):.3f}")
    for fp in [int(x) for x in args.fp.split(",")]:
        t = time.time()
        x = invert_latents(pipe, z_fin, prompts, 25, g, fp)
        rec = sample(x)
        corr = np.corrcoef(x.double().flatten(), z_init.double().flatten())[0, 1]
        sign = ((x > 0) == (z_init > 0)).float().mean().item()
        print(f"fixed-point {fp:2d}: corr {corr:.3f} sign {sign:.3f} |x_T|/|z_T| {float(x.norm() / z_init.norm()):.2f}"
              f"  forward reconstruction rel. error {float((rec - z_fin).norm() / z_fin.norm()):.4f}"
              f"  ({time.time() - t:.1f} s)", flush=True)
