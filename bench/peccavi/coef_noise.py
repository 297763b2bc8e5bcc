"""How much attacks move the DCT coefficients PECCAVI writes into: per YUV channel, the std over images and tiles of
(coefficient after the attack - before) at each position (u, v) < band of the 16-px tiles of clean toy images, next to
the QIM step (a slot reads back while the error stays below step / 4).

    .venv/bin/python bench/peccavi/coef_noise.py -n 16 --attack vae --attack paraphrase --attack img2img:strength=0.3
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    import erasekit
    from erasekit.marks import get_mark
    from erasekit.marks.attacks import apply_attack
    from erasekit.marks.bench import bench_prompts
    from erasekit.worlds import world_of_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=16)
    ap.add_argument("--spec", default="peccavi", help="peccavi spec whose tiles and band are measured")
    ap.add_argument("--attack", action="append", help="attack spec (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    pipe = erasekit.load_pipeline("toyworld")
    wm = get_mark(args.spec)
    clean = erasekit.generate(pipe, [p.text for p in bench_prompts(world_of_model(pipe), args.n, 0)],
                              seeds=list(range(args.n)))
    c0 = wm._slots(wm._coeffs(clean)[1]).reshape(args.n, -1, len(wm.config.channels), len(wm.config.positions))
    print(f"{args.spec}: step {wm.config.step} (reads back while |error| < {wm.config.step / 4}); positions "
          f"{wm.config.positions}")
    print(f"clean coefficient std per channel (mean over positions): {np.round(c0.std(axis=(0, 1)).mean(-1), 1)}")
    for a in args.attack or ["vae", "paraphrase", "img2img:strength=0.3"]:
        c1 = wm._slots(wm._coeffs(apply_attack(a, clean, pipe=pipe, seed=0))[1]).reshape(c0.shape)
        e = (c1 - c0).std(axis=(0, 1))  # (C, P)
        print(f"{a}: error std per channel Y/U/V (median over positions) {np.round(np.median(e, axis=1), 1)}, "
              f"range {np.round(e.min(), 1)}-{np.round(e.max(), 1)}")


if __name__ == "__main__":
    main()
