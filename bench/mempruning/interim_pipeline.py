"""An interim toy-world v2 pipeline from a training run's latest diffusion checkpoint (EMA UNet + text encoder) and
its finished VAE, with a manifest.json holding the run's memorized pairs -- so memorization code can be smoke-tested
while the run is still training. The pairs are re-derived exactly as `world.dataset_v2.build_dataset_v2` makes them
(own random stream [seed, 4242]), without rendering the whole dataset; check them against the final manifest.

    python bench/mempruning/interim_pipeline.py --run /work/runs/train-v2g --out /tmp/mp/v2s2000 \
        --memorized 1,1,1,10,10,10,100,100,100,1000,1000
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch


def memorized_info(counts: tuple[int, ...], seed: int = 0) -> list[dict]:
    """The manifest's dataset.v2.memorized entries of a run with these duplicate counts (rich v2 captions)."""
    from erasekit.toyworld.captions_v2 import caption_v2
    from erasekit.toyworld.catalogue import CATALOGUE
    from erasekit.toyworld.eval_grammar import protected_pattern
    from erasekit.toyworld.render import Scene

    avoid = protected_pattern()
    mrng = np.random.default_rng([seed, 4242])
    names = {f: [c.name for c in items] for f, items in CATALOGUE.items_by_family().items()}
    core = [a.name for a in CATALOGUE.artists if a.core]
    out = []
    for k, count in enumerate(counts):
        obj, col = names["object"][k % len(names["object"])], names["colour"][(3 * k) % len(names["colour"])]
        s = Scene(object=obj, colour=col, artist=core[(5 * k) % len(core)], seed=int(mrng.integers(2**31 - 1)))
        out.append({"caption": f"{caption_v2(s, mrng, CATALOGUE, avoid=avoid)}, photo number {k + 1}",
                    "count": count, "scene": asdict(s)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a toy-world training folder with checkpoints/")
    ap.add_argument("--out", required=True)
    ap.add_argument("--memorized", required=True, help="the run's --memorized counts, e.g. 1,10,100,1000")
    ap.add_argument("--seed", type=int, default=0, help="the run's --seed")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from diffusers import StableDiffusionPipeline

    from erasekit.io import load_checkpoint
    from erasekit.tokenizer import clip_tokenizer
    from erasekit.toyworld.model import SAMPLE_GUIDANCE, SAMPLE_STEPS, new_text_encoder, new_unet, new_vae, \
        sample_scheduler

    out, ck = Path(a.out), Path(a.run) / "checkpoints"
    if out.exists():
        raise SystemExit(f"error: {out} exists; choose another --out")
    counts = tuple(int(c) for c in a.memorized.split(","))
    st = load_checkpoint(ck / "diffusion.pt")
    step = int(st["step"])
    unet, te = new_unet(), new_text_encoder()
    unet.load_state_dict(st["ema"])
    te.load_state_dict(st["te"])
    del st
    vst = load_checkpoint(ck / "vae_done.pt")
    vae = new_vae()
    vae.load_state_dict(vst["model"])
    vae.register_to_config(scaling_factor=vst["info"]["scaling_factor"])
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=sample_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    card = {"world": "toyworld", "sampling": {"steps": SAMPLE_STEPS, "guidance": SAMPLE_GUIDANCE}}
    (out / "pipeline" / "erasekit.json").write_text(json.dumps(card))
    man = {"interim": f"EMA UNet of diffusion step {step} of {a.run} (unfinished run)",
           "dataset": {"v2": {"memorized": memorized_info(counts, a.seed)}}}
    (out / "manifest.json").write_text(json.dumps(man, indent=1))
    print(f"step {step} -> {out}")


if __name__ == "__main__":
    main()
