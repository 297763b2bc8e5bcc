"""The robust oracle of toy world v2 ("toyworld-oracle-v2"; issue 14, part 2).

The shipped oracle (`oracle.py`) is trained on the renderer's own placement (centre +-2 px, scale 0.9-1.1) with light
augmentation; measured from outside the project it says "none" for degraded but recognisable characters and fails when
the subject sits 4-6 px off that range. This one keeps the oracle's network (`model.Oracle`, so the two differ only in
training) and trains it on:

* a mix of the renderer's own placement (`plain_share`) and wider placement/scale (`shift`, `scale`, as judge2);
* a share of images round-tripped through the toy model's VAE (what every generated image goes through);
* blur, noise, colour jitter and partial occlusion (a 3-7 px block), judge2's augmentation;
* per-head temperature scaling on held-out augmented scenes, the expected calibration error before/after recorded, and
  an explicit "unsure" answer below `unsure_below` (`predict(..., abstain=True)`; evaluator option `abstain=true`).

Not (yet) in its data: generated images whose label is certain (the issue's last item) -- the certainty would have to
come from the two judges themselves, which is the circularity a cross-check must avoid; stated here, not hidden.

Train and ship (records config, timings and held-out metrics in oracle_v2.json):

    python -m erasekit.toyworld.oracle_v2 --out src/erasekit/assets/toyworld --threads 2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InvalidValueError
from .catalogue import CATALOGUE, FAMILIES, Catalogue
from .judge2 import augment, render_wide, vae_round_trip
from .model import Oracle
from .oracle import (ToyOracle, fit_temperature, heldout_metrics, random_scenes, scene_labels, to_tensor,
                     train_heads)
from .render import Scene, render

ORACLE_V2_NAME = "toyworld-oracle-v2"
STEM = "oracle_v2"
VERSION = "0.2.0"
TRAIN_COMMAND = "python -m erasekit.toyworld.oracle_v2 --out src/erasekit/assets/toyworld --threads 2"


@dataclass(frozen=True)
class RobustOracleConfig:
    steps: int = field(default=2000, metadata={"help": "optimiser steps"})
    batch_size: int = field(default=128, metadata={"help": "images per step"})
    lr: float = field(default=2e-3, metadata={"help": "AdamW peak learning rate (cosine decay)"})
    pool: int = field(default=12000, metadata={"help": "pre-rendered training scenes (re-augmented every step)"})
    plain_share: float = field(default=0.4, metadata={"help": "share of the pool at the renderer's own placement"})
    vae_share: float = field(default=0.25, metadata={"help": "share of the pool round-tripped through the toy VAE"})
    shift: float = field(default=6.0, metadata={"help": "wide renders: centre jitter in px (renderer: 2)"})
    scale: tuple[float, float] = field(default=(0.75, 1.25), metadata={"help": "wide renders: scale range"})
    calib: int = field(default=1000, metadata={"help": "held-out scenes for the temperatures"})
    test: int = field(default=1000, metadata={"help": "held-out scenes for the reported accuracy / ECE"})
    unsure_below: float = field(default=0.5, metadata={"help": "top probability under which a head is unsure"})
    seed: int = field(default=0, metadata={"help": "seed of scenes, augmentation and initialisation"})

    def __post_init__(self) -> None:
        for k in ("steps", "batch_size", "pool", "calib", "test"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InvalidValueError(f"robust oracle {k} must be a positive integer, got {v!r}")
        for k in ("plain_share", "vae_share"):
            if not 0 <= getattr(self, k) <= 1:
                raise InvalidValueError(f"robust oracle {k} must be in [0, 1], got {getattr(self, k)!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InvalidValueError(f"robust oracle lr must be a positive finite number, got {self.lr!r}")
        if not 0 <= self.unsure_below < 1:
            raise InvalidValueError(f"robust oracle unsure_below must be in [0, 1), got {self.unsure_below!r}")


def robust_images(scenes: list[Scene], cfg: RobustOracleConfig, vae: Any, seed: int,
                  catalogue: Catalogue = CATALOGUE) -> np.ndarray:
    """(N, 32, 32, 3) uint8: a seeded `plain_share` at the renderer's placement, the rest wide; a seeded `vae_share`
    of all of them VAE round-tripped."""
    rng = np.random.default_rng(seed)
    plain = rng.random(len(scenes)) < cfg.plain_share
    imgs = np.stack([render(s, catalogue) if p else render_wide(s, cfg.shift, cfg.scale, catalogue)
                     for s, p in zip(scenes, plain)])
    pick = rng.random(len(imgs)) < cfg.vae_share
    if pick.any():
        imgs[pick] = vae_round_trip(imgs[pick], vae)
    return imgs


def train_robust_oracle(cfg: RobustOracleConfig = RobustOracleConfig(), vae: Any = None,
                        catalogue: Catalogue = CATALOGUE, progress=None) -> tuple[ToyOracle, dict]:
    """Train the robust oracle; fit per-head temperatures on held-out augmented scenes; report held-out accuracy, ECE
    and unsure rate on wide+VAE scenes and on plain renders, next to the shipped oracle's on the same images."""
    from diffusers import AutoencoderKL

    from .plugin import assets_dir, load_oracle

    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    if vae is None:
        vae = AutoencoderKL.from_pretrained(str(assets_dir() / "pipeline" / "vae"), torch_dtype=torch.float32).eval()
    scenes = random_scenes(cfg.pool, cfg.seed + 101, catalogue)
    x = to_tensor(robust_images(scenes, cfg, vae, cfg.seed + 102, catalogue))
    y = scene_labels(scenes, catalogue)
    t_data = time.perf_counter() - t0
    net = Oracle({f: len(catalogue.classes(f)) for f in FAMILIES})
    train_heads(net, x, y, cfg.steps, cfg.batch_size, cfg.lr, gen, augment, progress)
    t_train = time.perf_counter() - t0 - t_data
    cal_scenes = random_scenes(cfg.calib, cfg.seed + 20_101, catalogue)
    cal_x = augment(to_tensor(robust_images(cal_scenes, cfg, vae, cfg.seed + 103, catalogue)), gen)
    cal_y = scene_labels(cal_scenes, catalogue)
    with torch.no_grad():
        cal_logits = net(cal_x)
    temps = {f: fit_temperature(cal_logits[f], cal_y[f]) for f in FAMILIES}
    oracle = ToyOracle(net, catalogue, version=VERSION, temperatures=temps, unsure_below=cfg.unsure_below,
                       name=ORACLE_V2_NAME)
    raw = ToyOracle(net, catalogue, temperatures={f: 1.0 for f in FAMILIES}, unsure_below=cfg.unsure_below)
    shipped = load_oracle()
    shipped.unsure_below = cfg.unsure_below
    test_scenes = random_scenes(cfg.test, cfg.seed + 30_101, catalogue)
    wide_cfg = RobustOracleConfig(plain_share=0.0, vae_share=0.5, shift=cfg.shift, scale=cfg.scale)
    wide = robust_images(test_scenes, wide_cfg, vae, cfg.seed + 104, catalogue)
    plain = np.stack([render(s, catalogue) for s in test_scenes])
    info = {"config": asdict(cfg), "command": TRAIN_COMMAND, "threads": torch.get_num_threads(),
            "seconds": {"data": round(t_data, 1), "train": round(t_train, 1),
                        "total": round(time.perf_counter() - t0, 1)},
            "heldout_wide_vae": heldout_metrics(oracle, wide, test_scenes, catalogue),
            "heldout_wide_vae_uncalibrated_ece": {f: v["ece"] for f, v in
                                                  heldout_metrics(raw, wide, test_scenes, catalogue).items()},
            "heldout_plain_renders": heldout_metrics(oracle, plain, test_scenes, catalogue),
            "shipped_oracle_heldout_wide_vae": heldout_metrics(shipped, wide, test_scenes, catalogue),
            "shipped_oracle_heldout_plain_renders": heldout_metrics(shipped, plain, test_scenes, catalogue),
            "heldout_note": "wide+VAE: centre +-shift px, scale range, half of them VAE round-tripped; accuracy of "
                            "the shipped (v1) oracle on the same images for comparison (its ece is uncalibrated)"}
    return oracle, info


def load_robust_oracle(directory: str | Path | None = None, catalogue: Catalogue = CATALOGUE) -> ToyOracle:
    """The robust oracle shipped in the toy world's assets (or saved in `directory`)."""
    from .plugin import assets_dir

    return ToyOracle.load(Path(directory or assets_dir()), catalogue, stem=STEM)


def main(argv: list[str] | None = None) -> None:
    """Train the robust oracle and write oracle_v2.safetensors + oracle_v2.json into --out (no overwrite without
    --overwrite)."""
    ap = argparse.ArgumentParser(prog="python -m erasekit.toyworld.oracle_v2", description=main.__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=RobustOracleConfig.steps)
    ap.add_argument("--pool", type=int, default=RobustOracleConfig.pool)
    ap.add_argument("--seed", type=int, default=RobustOracleConfig.seed)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--overwrite", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out)
    if (out / f"{STEM}.safetensors").exists() and not a.overwrite:
        raise SystemExit(f"error: {out / (STEM + '.safetensors')} exists; pass --overwrite to replace it")
    torch.set_num_threads(max(1, a.threads))
    try:
        cfg = RobustOracleConfig(steps=a.steps, pool=a.pool, seed=a.seed)
    except InvalidValueError as e:
        raise SystemExit(f"error: {e}") from None

    def progress(step: int, loss: float) -> None:
        if step % 100 == 0 or step == cfg.steps:
            print(f"step {step}/{cfg.steps} loss {loss:.4f} {time.strftime('%H:%M:%S')}", flush=True)

    oracle, info = train_robust_oracle(cfg, progress=progress)
    info["command"] = "python -m erasekit.toyworld.oracle_v2 " + " ".join(sys.argv[1:] if argv is None else argv)
    oracle.save(out, {"training": info}, stem=STEM)
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()


__all__ = ["ORACLE_V2_NAME", "RobustOracleConfig", "load_robust_oracle", "robust_images",
           "train_robust_oracle"]
