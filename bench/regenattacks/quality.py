"""Quality cost of the regeneration attacks on the toy model: for the mark bench's 32 prompts (guidance G), each
attack's mean |attacked - input| (0-255), PSNR, and the toy-world oracle's label agreement with the prompt's labels on
the attacked images (the bench's label_acc; inputs: unmarked images of seeds 0..n-1).
Usage: .venv/bin/python bench/regenattacks/quality.py [-n 32] [--guidance G] [attack ...]"""
import argparse
import time

import numpy as np
import torch

torch.set_num_threads(1)
from erasekit import load_pipeline  # noqa: E402
from erasekit.evaluators import get_evaluator  # noqa: E402
from erasekit.generation import generate  # noqa: E402
from erasekit.marks.attacks import apply_attack  # noqa: E402
from erasekit.marks.bench import _label_acc, bench_prompts  # noqa: E402
from erasekit.worlds import get_world  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("-n", type=int, default=32)
ap.add_argument("--guidance", type=float, default=None)
ap.add_argument("attacks", nargs="*", default=["img2img:strength=0.3", "img2img:strength=0.6", "ctrlregen",
                                               "ctrlregen:down=1", "ctrlregen:down=4", "ctrlregen:control=0"])
args = ap.parse_args()
pipe = load_pipeline("toyworld")
world, ev = get_world("toyworld"), get_evaluator("toyworld-oracle")
ps = bench_prompts(world, args.n, 0)
texts, labels = [p.text for p in ps], [dict(p.labels) for p in ps]
imgs = generate(pipe, texts, list(range(args.n)), guidance=args.guidance)
print(f"n={args.n} guidance={args.guidance}: label acc of the inputs {_label_acc(ev, imgs, labels):.3f}")
print("| attack | drift (0-255) | PSNR dB | oracle label acc | CPU s |")
print("|---|---|---|---|---|")
for spec in args.attacks:
    t = time.process_time()
    out = apply_attack(spec, imgs, pipe=pipe, seed=0)
    d = out.astype(np.float64) - imgs
    psnr = float(np.mean([10 * np.log10(255 ** 2 / max((x ** 2).mean(), 1e-9)) for x in d]))
    print(f"| {spec} | {np.abs(d).mean():.2f} | {psnr:.1f} | {_label_acc(ev, out, labels):.3f} | "
          f"{time.process_time() - t:.1f} |", flush=True)
