"""Quick tuning probe (helper B): train a method with given options on the toy model, report the oracle check."""
import json, sys, time, os
import torch
torch.set_num_threads(1)
from erasekit import load_pipeline, erase
from erasekit.erasers._training import concept_hooks
from erasekit.worlds import get_world

method, concept = sys.argv[1], sys.argv[2]
opts = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
world = get_world("toyworld")
req = world.concept(concept).request()
pipe = load_pipeline("toyworld")
hooks = concept_hooks(world, "toyworld-oracle", concept)
from erasekit.erasers import get_eraser
if "templates" in {f[0] for f in get_eraser(method).options()} and "templates" not in opts:
    opts["templates"] = world.templates(req["erase"][0], 8)
t = time.time()
e = erase(pipe, method, erase=req["erase"], guide=[req["guide"]], preserve=req["preserve"], hooks=hooks, **opts)
tr = e.manifest["info"]["train"]
print(method, concept, {k: v for k, v in opts.items() if k != "templates"}, f"{time.time()-t:.0f}s", tr["stopped"], [c["rate"] for c in tr["checks"]], flush=True)
if os.environ.get("SAVE"):
    e.save(os.environ["SAVE"], overwrite=True) if "overwrite" in e.save.__code__.co_varnames else e.save(os.environ["SAVE"])
