# Reproduces BENCHMARKS.md "Recovery attacks": make the edit first: erasekit erase --method uce --erase Zorbo --out runs/rec/zorbo-uce.safetensors
"""Membership inference on the toy model, members and non-members from the same distribution: members = training
scenes of a concept in the shipped model's training set (with their training captions); non-members = scenes of the
same concept planned by the same dataset code with another seed (never trained on), captioned the same way."""
import json, sys, time, copy
import numpy as np, torch
torch.set_num_threads(1)
import erasekit
from erasekit.edits import Edit
from erasekit.membership import membership_inference
from erasekit.toyworld.plugin import shipped_dataset, manifest
from erasekit.toyworld.dataset import plan_scenes
from erasekit.toyworld.render import render
from erasekit.toyworld.captions import caption

N = 32
pipe = erasekit.load_pipeline("toyworld")
erased = copy.deepcopy(pipe)
Edit.load("runs/rec/zorbo-uce.safetensors", erased).apply(erased)
t0 = time.time()
ds = shipped_dataset()
ds_meta = manifest()["dataset"]
print("dataset", len(ds), round(time.time() - t0), "s", flush=True)
other = plan_scenes(ds_meta["seed"] + 12345, ds_meta["scale"])
out = {}
for family, concept in [("character", "Zorbo"), ("character", "Mossy"), ("artist", "Cora Voss")]:
    rng = np.random.default_rng(0)
    idx = [i for i, s in enumerate(ds.scenes) if s.labels()[family] == concept]
    idx = [idx[i] for i in rng.choice(len(idx), size=min(N, len(idx)), replace=False)]
    members, mcaps = ds.images[idx], [ds.captions[i] for i in idx]
    scenes = [s for s in other if s.labels()[family] == concept][:len(idx)]
    crng = np.random.default_rng(1)
    nonmembers = np.stack([render(s) for s in scenes])
    ncaps = [caption(s, crng) for s in scenes]
    r = {}
    r["auc_loss_base"] = membership_inference(pipe, members, nonmembers, None, mcaps, ncaps).auc
    r["auc_loss_uce_zorbo"] = membership_inference(erased, members, nonmembers, None, mcaps, ncaps).auc
    r["auc_uce_zorbo_vs_base_reference"] = membership_inference(erased, members, nonmembers, pipe, mcaps, ncaps).auc
    r.update(members=len(members), nonmembers=len(nonmembers), train_count=len([1 for s in ds.scenes if s.labels()[family] == concept]))
    out[concept] = r
    print(concept, r, flush=True)
json.dump(out, open("runs/rec/membership.json", "w"), indent=1)
