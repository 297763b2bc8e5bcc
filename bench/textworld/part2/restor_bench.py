"""RESTOR protocol on the shipped text-world model. usage: restor_bench.py OUT.json method:k=v ..."""
import json, sys, time
import torch
torch.set_num_threads(1)
from erasekit.text.world import build_world
from erasekit.text.models import load_text_model
from erasekit.text.restor import RestorConfig, restor

w = build_world()
model, tok, _ = load_text_model("textworld")
methods, opts = [], {}
specs = [a for a in sys.argv[2:] if not a.startswith("--")]
for spec in specs:
    m, _, o = spec.partition(":")
    kw = {"threads": 1}
    for p in filter(None, o.split(",")):
        k, v = p.split("=")
        kw[k] = float(v) if "." in v or "e-" in v else int(v) if v.isdigit() else v
    methods.append(m)
    opts[m] = kw
t = time.time()
res = restor(model, tok, w, methods, RestorConfig(threads=1, replay="--no-replay" not in sys.argv),
             method_options=opts)
res["seconds"] = time.time() - t
res["specs"] = sys.argv[2:]  # "--no-replay": the run before the replay option existed (= replay=False)
print(json.dumps(res, indent=1))
open(sys.argv[1], "w").write(json.dumps(res, indent=1))
