"""How well the one-shot preference-model estimate recovers a real mark on the toy model (ground truth used only to
score): DWT-DCT-marked images, estimate per image, report mean |estimate| (levels), its correlation with the true
residual (marked - clean), and the share of forged covers (estimate stamped on other clean images) detected as marked.
Usage: .venv/bin/python bench/regenattacks/pref_estimate.py [n]"""
import sys
import time

import numpy as np
import torch

torch.set_num_threads(1)
from erasekit import load_pipeline  # noqa: E402
from erasekit.generation import generate  # noqa: E402
from erasekit.marks import get_mark  # noqa: E402
from erasekit.marks.regen_attacks import (PrefForgeConfig, _to_uint8, _to_unit, estimate_marks,  # noqa: E402
                                          preference_model)

n = int(sys.argv[1]) if len(sys.argv) > 1 else 8
pipe = load_pipeline("toyworld")
clean = generate(pipe, ["a red circle", "a blue square", "a green star", "a yellow ring"] * (n // 4), list(range(n)))
covers = generate(pipe, ["a purple triangle"] * n, list(range(100, 100 + n)))
mark = get_mark("dwtdct")
key = mark.keygen(pipe)
marked = mark.embed_images(key, clean)
true = (marked.astype(np.float64) - clean).transpose(0, 3, 1, 2)
print(f"true mark: mean |.| {np.abs(true).mean():.2f} levels; detected marked "
      f"{mark.detect(key, marked).decision.mean()}, clean {mark.detect(key, clean).decision.mean()}, "
      f"covers {mark.detect(key, covers).decision.mean()}")
net, acc = preference_model(pipe, PrefForgeConfig(), seed=0)
print(f"preference model held-out accuracy {acc:.3f}")
KWS = [{"lr": 0.03}, {"lr": 0.1}, {"lr": 0.3}, {"lr": 1.0}, {"lr": 0.1, "edge_mask": False}]
for kw in KWS:
    cfg = PrefForgeConfig(**kw)
    t = time.process_time()
    est = estimate_marks(net, marked, cfg).numpy() * 255
    est_c = estimate_marks(net, clean, cfg).numpy() * 255
    corr = np.mean([np.corrcoef(e.ravel(), m.ravel())[0, 1] for e, m in zip(est, true)])
    corr_c = np.mean([np.corrcoef(e.ravel(), m.ravel())[0, 1] for e, m in zip(est_c, true)])
    for alpha in (1.0, 3.0, 10.0):
        forged = _to_uint8(_to_unit(covers) + alpha * torch.from_numpy(est / 255))
        removed = _to_uint8(_to_unit(marked) - alpha * torch.from_numpy(est / 255))
        det = mark.detect(key, forged)
        print(f"{kw} alpha {alpha}: |est| {np.abs(est).mean():.2f}, corr(est, true) {corr:.3f} (from clean image: "
              f"{corr_c:.3f}); forged detected {det.decision.mean():.3f} (bit acc {det.bit_acc.mean():.3f}, drift "
              f"{np.abs(forged.astype(float) - covers).mean():.1f}), removed still "
              f"detected {mark.detect(key, removed).decision.mean():.3f}; {time.process_time() - t:.1f} CPU s",
              flush=True)
