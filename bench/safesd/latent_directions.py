"""Latent directions of the toy VAE: content covariance eigenvalues of E(x) over 128 rendered toy images, and for a
0.3 perturbation along each eigenvector at 2x2 latent positions of 16 images: the pixel RMSE it causes and how much of
it the encoder recovers.  Usage: .venv/bin/python bench/safesd/latent_directions.py"""
import torch, numpy as np; torch.set_num_threads(1)
from diffusers import AutoencoderKL
from erasekit.worlds import get_world
from erasekit.marks.safe_sd import world_images, _to_unit
vae = AutoencoderKL.from_pretrained("src/erasekit/assets/toyworld/pipeline/vae").eval()
ims = world_images(get_world("toyworld"), 128, 0)
with torch.no_grad():
    z = vae.encode(_to_unit(ims,"cpu",torch.float32)).latent_dist.mode()
    zz = z.permute(0,2,3,1).reshape(-1,4)
    C = torch.cov(zz.T); ev, U = torch.linalg.eigh(C)
    print("mean", zz.mean(0), "eig", ev)
    # pixel gain per eigen direction
    x0 = vae.decode(z[:16]).sample
    for i in range(4):
        d = U[:, i].reshape(1,4,1,1)*0.3
        zp = z[:16].clone(); zp[:,:,3:5,3:5] += d
        x1 = vae.decode(zp).sample
        zr = vae.encode(x1).latent_dist.mode()
        rec = ((zr-z[:16].clone())[:,:,3:5,3:5]*U[:,i].reshape(1,4,1,1)).sum(1).mean()
        print(i, "pix rmse", float(((x1-x0)**2).mean().sqrt()), "pix maxabs", float((x1-x0).abs().max()), "recovered", float(rec))
