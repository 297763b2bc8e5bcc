"""Train Safe-SD's injector / extractor on the toy model's VAE alone (no U-Net needed) and save the weights.

    OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/safesd/train.py OUT.safetensors grid=4 psnr=28

Options are SafeSDConfig fields (k=v). Prints the training log, wall and CPU seconds, and the weights' metadata.
"""

from __future__ import annotations

import json
import resource
import sys
import time
import types
from pathlib import Path

import torch


def main() -> None:
    torch.set_num_threads(1)
    from diffusers import AutoencoderKL

    from erasekit.config import parse_spec_options
    from erasekit.marks.safe_sd import SafeSDConfig, train_safe_sd

    out, opts = sys.argv[1], ",".join(sys.argv[2:])
    cfg = SafeSDConfig(**(parse_spec_options("safe_sd", SafeSDConfig, opts) if opts else {}))
    root = Path(__file__).resolve().parents[2]
    vae = AutoencoderKL.from_pretrained(str(root / "src/erasekit/assets/toyworld/pipeline/vae"))
    # the VAE is all stage 1 needs: a stand-in with the pipeline's image geometry
    pipe = types.SimpleNamespace(vae=vae, unet=types.SimpleNamespace(config=types.SimpleNamespace(sample_size=8)),
                                 vae_scale_factor=4)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.time()
    w = train_safe_sd(pipe, cfg, log=lambda s: print(s, flush=True))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    w.save(out, overwrite=True)
    print(json.dumps({"wall_s": round(time.time() - t0, 1),
                      "cpu_s": round(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime, 1), **w.meta}))


if __name__ == "__main__":
    main()
