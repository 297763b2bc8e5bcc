"""Attacks (relearn, in-context), scalability and sustainability with npo_gdr (lr=2e-4, steps=30)."""
import json, time
import torch
torch.set_num_threads(2)
from erasekit.text.world import build_world
from erasekit.text.models import load_text_model
from erasekit.text.unlearn import unlearn
from erasekit.text import muse, attacks
OPTS = {"lr": 2e-4, "steps": 30}
w = build_world()
model, tok, _ = load_text_model("textworld")
ret, rtok, _ = load_text_model("textworld-retrained")
forget, retain = w.forget_request()
out = {"options": OPTS}
t = time.time()
edit = unlearn(model, tok, "npo_gdr", forget, retain, forget_names=["forget-split"], **OPTS)
edit.save("runs/textworld/edits/npo_gdr.safetensors")
facts = w.qa("forget")
out["in_context"] = {"base": attacks.in_context(model, tok, facts), "retrained": attacks.in_context(ret, rtok, facts)}
with edit.applied(model):
    out["in_context"]["npo_gdr"] = attacks.in_context(model, tok, facts)
    out["relearn"] = {"npo_gdr": attacks.relearn(model, tok, w)}
out["relearn"]["retrained"] = attacks.relearn(ret, rtok, w)
print(json.dumps(out), flush=True)
out["scalability"] = muse.scalability_runs(model, tok, w, "npo_gdr", [1, 2, 4], **OPTS)
print(json.dumps(out["scalability"]), flush=True)
out["sustainability"] = muse.sustainability_runs(model, tok, w, "npo_gdr", **OPTS)
print(json.dumps(out["sustainability"]), flush=True)
out["seconds"] = time.time() - t
json.dump(out, open("runs/textworld/final_extra.json", "w"), indent=1)
