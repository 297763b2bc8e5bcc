"""Seconds per training step of each toy-world stage, with `TrainConfig.speedups` on and off, in one process.

The stage functions of `erasekit.toyworld.train` run for a few steps on a small slice of the v2 dataset (a step's cost
does not depend on the dataset's size: fixed batch sizes); the median step time (from the progress callback's
timestamps, after warm-up steps) times the shipped config's step counts estimates each stage's training time. The
two settings alternate (off, on, off, on, ...) so machine load hits both alike; the ratio is the result to quote.

    OMP_WAIT_POLICY=PASSIVE python bench/world2/train_speed.py --threads 2 --steps 12 --rounds 2 --out runs/train_speed.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from erasekit.io import atomic_write_text
from erasekit.toyworld.dataset_v2 import WorldV2Options, build_dataset_v2
from erasekit.toyworld.oracle import to_tensor
from erasekit.toyworld.train import TrainConfig, pretrain_text_encoder, train_diffusion, train_vae


def step_times(run, warmup: int) -> dict[str, float]:
    """Median seconds per step of each stage `run(progress)` reports, skipping each stage's first `warmup` steps."""
    stamps: dict[str, list[float]] = {}

    def progress(stage: str, step: int, total: int, info: dict) -> None:
        stamps.setdefault(stage, []).append(time.perf_counter())

    run(progress)
    out = {}
    for stage, ts in stamps.items():
        gaps = [b - a for a, b in zip(ts, ts[1:])][warmup:]
        out[stage] = statistics.median(gaps)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12, help="steps per stage and setting in each round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    full = TrainConfig(grammar="v2")  # the shipped step counts and batch sizes
    data = build_dataset_v2(0, 0.05, WorldV2Options(rich_captions=True))
    images, captions = data.images[:1024], data.captions[:1024]
    gen = torch.Generator().manual_seed(0)
    lat_mean = torch.randn(len(captions), 4, 8, 8, generator=gen)
    lat_std = torch.full_like(lat_mean, 0.05)
    feats = torch.randn(len(captions), 256, generator=gen)
    n = args.steps
    rows: dict[str, dict[str, list[float]]] = {"off": {}, "on": {}}
    for r in range(args.rounds):
        for setting in ("off", "on"):
            cfg = dataclasses.replace(full, speedups=setting == "on", vae_steps=n, text_steps=n, joint_steps=n,
                                      unet_steps=n, ckpt_every=10 ** 6)
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)

                def run(progress):
                    train_vae(images, cfg, tmp / "vae.pt", progress)
                    pretrain_text_encoder(captions, feats, cfg, tmp / "text.pt", progress)
                    train_diffusion(captions, lat_mean, lat_std, 1.0, cfg, tmp, progress)

                for stage, s in step_times(run, args.warmup).items():
                    rows[setting].setdefault(stage, []).append(s)
            print(r, setting, {k: round(v[-1], 4) for k, v in rows[setting].items()}, flush=True)
    counts = {"vae": full.vae_steps, "text": full.text_steps, "joint": full.joint_steps, "unet": full.unet_steps}
    result = {"threads": args.threads, "steps": n, "rounds": args.rounds, "torch": torch.__version__, "stages": {}}
    for stage, count in counts.items():
        off, on = statistics.median(rows["off"][stage]), statistics.median(rows["on"][stage])
        result["stages"][stage] = {"steps_in_config": count, "s_per_step_off": round(off, 4),
                                   "s_per_step_on": round(on, 4), "ratio_on_off": round(on / off, 3),
                                   "est_minutes_off": round(off * count / 60, 1),
                                   "est_minutes_on": round(on * count / 60, 1)}
    result["est_minutes_off"] = round(sum(v["est_minutes_off"] for v in result["stages"].values()), 1)
    result["est_minutes_on"] = round(sum(v["est_minutes_on"] for v in result["stages"].values()), 1)
    atomic_write_text(args.out, json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
