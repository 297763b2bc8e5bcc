"""Probe: how well does DDIM inversion (empty prompt, no guidance) recover the toy model's initial latents?
Correlation and sign agreement between the recovered and the true initial latent of 4 images generated with the
model's defaults (25 DDIM steps, guidance 5), from (a) the true final latent (no VAE), (b) the VAE encoder's mean,
(c) decoder inversion (50 Adam steps, lr 0.05), at several inversion step counts.
Run: OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/marks_probe_inversion.py"""
import time
import numpy as np
import torch
torch.set_num_threads(1)
import erasekit
from erasekit.sampling import cfg_combine, decode, denoise, encode_prompts, initial_latents
from erasekit.marks._latent import decoder_invert, encode_images
from diffusers import DDIMScheduler

pipe = erasekit.load_pipeline("toyworld")
prompts = ["a red ring in the style of Cora Voss", "Zorbo", "a blue square", "a green circle"]
seeds = [0, 1, 2, 3]
with torch.no_grad():
    z_init = initial_latents(pipe, seeds)
    cond, unc = encode_prompts(pipe, prompts), encode_prompts(pipe, [""] * 4)
    z0 = denoise(pipe, [unc, cond], cfg_combine(5.0), seeds, steps=25)
    im = decode(pipe, z0)
    z_enc = encode_images(pipe, im)
z_dec = decoder_invert(pipe, im, z_enc, 50)


@torch.no_grad()
def invert(x, steps):
    s = DDIMScheduler.from_config(pipe.scheduler.config)
    s.set_timesteps(steps)
    acp, a_prev, x = s.alphas_cumprod.double(), float(s.final_alpha_cumprod), x.double()
    for t in s.timesteps.flip(0):
        a_t = float(acp[int(t)])
        eps = pipe.unet(x.float(), t, encoder_hidden_states=unc).sample.double()
        x = a_t ** .5 * (x - (1 - a_prev) ** .5 * eps) / a_prev ** .5 + (1 - a_t) ** .5 * eps
        a_prev = a_t
    return x


for steps in (25, 50, 100):
    for name, z in (("true final latent", z0), ("VAE encoder", z_enc), ("decoder inversion 50", z_dec)):
        x = invert(z, steps)
        print(f"steps {steps:3d} from {name:22s} corr {np.corrcoef(x.flatten(), z_init.flatten())[0, 1]:.3f} "
              f"sign agreement {((x > 0) == (z_init > 0)).float().mean().item():.3f}", flush=True)
