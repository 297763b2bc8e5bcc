# Reproduces BENCHMARKS.md "Recovery attacks" (extra probes); needs runs/rec/zorbo-uce.safetensors (erasekit erase --method uce --erase Zorbo --out ...)
import sys, time, torch
torch.set_num_threads(1)
import erasekit
from erasekit.edits import Edit
from erasekit.attacks import run_attack
pipe = erasekit.load_pipeline("toyworld")
Edit.load("runs/rec/zorbo-uce.safetensors", pipe).apply(pipe)
name = sys.argv[1]
opts = dict(kv.split("=") for kv in sys.argv[2:])
opts = {k: (float(v) if "." in v or "e-" in v else int(v) if v.isdigit() else v) for k, v in opts.items()}
t = time.time()
res = run_attack(name, pipe, "Zorbo", evaluator="toyworld-oracle", n_prompts=4, **opts)
print(name, opts, "pre", res.pre, "post", res.post, "atk_s", round(res.attack_seconds, 1), "wall", round(time.time() - t, 1),
      (res.replay.info.get("losses", [])[-3:] if res.replay else res.logs[0].losses[-3:]), flush=True)
