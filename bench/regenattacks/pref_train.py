"""Preference model on the toy model: training time and held-out ranking accuracy (clean vs clean + procedural mark)
for a few settings. Usage: .venv/bin/python bench/regenattacks/pref_train.py"""
import time

import torch

torch.set_num_threads(1)
from erasekit import load_pipeline  # noqa: E402
from erasekit.generation import generate  # noqa: E402
from erasekit.marks.regen_attacks import PREF_SEED_OFFSET, PrefModelConfig, train_preference_model  # noqa: E402

pipe = load_pipeline("toyworld")
t = time.process_time()
clean = generate(pipe, [""] * 32, PREF_SEED_OFFSET)
print(f"32 clean images: {time.process_time() - t:.1f} CPU s", flush=True)
for kw in [{}, {"train_steps": 100}, {"amp_min": 1.0, "amp_max": 4.0}]:
    t = time.process_time()
    _, acc = train_preference_model(clean, PrefModelConfig(**kw), seed=0)
    print(f"{kw or 'defaults'}: held-out ranking accuracy {acc:.3f}, {time.process_time() - t:.1f} CPU s", flush=True)
