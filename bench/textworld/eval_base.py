import json, time, sys
import torch
torch.set_num_threads(2)
from erasekit.text.world import build_world
from erasekit.text.train import load_lm
from erasekit.text import muse
w = build_world()
base, tok = load_lm("runs/textworld/base")
ret, rtok = load_lm("runs/textworld/retrained")
t = time.time()
auc_ret = muse.mink_auc(ret, rtok, *muse.privleak_texts(w))
out = {"auc_retrained": auc_ret}
for name, (m, tk) in {"base": (base, tok), "retrained": (ret, rtok)}.items():
    met, rows = muse.evaluate_lm(m, tk, w, auc_ret)
    met20f = muse.knowmem(m, tk, w.qa("forget", 20))[1]
    met20r = muse.knowmem(m, tk, w.qa("retain", 20))[1]
    met["qa_acc_forget_f>=20"], met["qa_acc_retain_f>=20"] = met20f, met20r
    vr = muse.verbmem(m, tk, muse.verbatim_items(w, "retain", tokenizer=tk))[0]
    met["verbmem_retain_books"] = vr
    out[name] = met
    print(name, json.dumps(met), flush=True)
    if name == "base":
        print(rows["verbmem_f"][0], flush=True)
        print([r for r in rows["knowmem_f"] if not r["correct"]][:5], flush=True)
out["frequency_curve_base"] = muse.frequency_curve(base, tok, w)
print(json.dumps(out["frequency_curve_base"]["accuracy_by_frequency"]), out["frequency_curve_base"]["threshold"]["threshold"])
out["seconds"] = time.time() - t
json.dump(out, open("runs/textworld/eval_base.json", "w"), indent=1)
