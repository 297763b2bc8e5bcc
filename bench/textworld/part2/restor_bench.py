"""RESTOR protocol on the shipped text-world model. usage: restor_bench.py OUT.json method:k=v ... [--no-replay]
[--budgets=0,10,30,60] [--seed=N] [--report=DIR] [--inject=10,20,40] (budgets: a budget curve per method,
unlearning steps; inject: instead, the whole protocol per injection step count, `injection_curve`; seed:
RestorConfig.seed; report: also DIR/results.json in `erasekit text attack --kind restor`'s format and its report.html)"""
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
flags = dict(a[2:].split("=", 1) for a in sys.argv[2:] if a.startswith("--") and "=" in a)
budgets = tuple(int(b) for b in flags.get("budgets", "").split(",") if b.strip())
for spec in specs:
    m, _, o = spec.partition(":")
    kw = {"threads": 1}
    for p in filter(None, o.split(",")):
        k, v = p.split("=")
        kw[k] = float(v) if "." in v or "e-" in v else int(v) if v.isdigit() else v
    methods.append(m)
    opts[m] = kw
t = time.time()
if "inject" in flags:  # the corrupter's budget: the whole protocol per injection step count
    from erasekit.text.restor import injection_curve

    rows = injection_curve(model, tok, w, methods, [int(n) for n in flags["inject"].split(",")],
                           RestorConfig(threads=1, seed=int(flags.get("seed", 0))), method_options=opts)
    out = {"injection_curve": rows, "seconds": time.time() - t, "specs": sys.argv[2:]}
    print(json.dumps(out, indent=1))
    open(sys.argv[1], "w").write(json.dumps(out, indent=1))
    sys.exit(0)
res = restor(model, tok, w, methods, RestorConfig(threads=1, replay="--no-replay" not in sys.argv,
                                                 seed=int(flags.get("seed", 0))),
             method_options=opts, budgets=budgets)
res["seconds"] = time.time() - t
res["specs"] = sys.argv[2:]  # "--no-replay": the run before the replay option existed (= replay=False)
print(json.dumps(res, indent=1))
open(sys.argv[1], "w").write(json.dumps(res, indent=1))
if "report" in flags:
    from erasekit.report.eval_report import write_report
    from erasekit.text.muse import write_results

    write_results(flags["report"], {"format": "erasekit.text.attack/1", "kind": "restor", "model": "textworld",
                                    "world_sha256": w.content_sha256(), "result": res})
    print("report:", write_report(flags["report"]))
