"""Unlearn the forget split with each method, evaluate MUSE metrics. usage: bench_methods.py OUT.jsonl method[:k=v,...] ..."""
import json, sys, time
import torch
torch.set_num_threads(2)
from erasekit.text.world import build_world
from erasekit.text.models import load_text_model
from erasekit.text.unlearn import unlearn
from erasekit.text import muse
w = build_world()
model, tok, _ = load_text_model("textworld")
ret, rtok, _ = load_text_model("textworld-retrained")
auc_ret = muse.mink_auc(ret, rtok, *muse.privleak_texts(w))
forget, retain = w.forget_request()
out = sys.argv[1]
for spec in sys.argv[2:]:
    method, _, opts = spec.partition(":")
    kw = {}
    for p in filter(None, opts.split(",")):
        k, v = p.split("=")
        kw[k] = float(v) if "." in v or "e-" in v else int(v) if v.isdigit() else v
    t = time.time()
    edit = unlearn(model, tok, method, forget, retain, forget_names=["forget-split"], **kw)
    secs = time.time() - t
    edit.save(f"runs/textworld/edits/{method}.safetensors") if False else None
    with edit.applied(model):
        met, _ = muse.evaluate_lm(model, tok, w, auc_ret)
    met.update(seconds=secs, spec=spec, train=edit.manifest["train"])
    print(json.dumps(met), flush=True)
    with open(out, "a") as f:
        f.write(json.dumps(met) + "\n")
