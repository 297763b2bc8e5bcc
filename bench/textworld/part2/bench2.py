"""Text world part 2 bench: PrivLeak (official orientation) + its investigation, RESTOR distance to the retrained
model, the step-by-step reasoning attack, per unlearning method. usage: bench2.py OUT.jsonl [method:k=v,...]..."""
import json, sys, time
import numpy as np
import torch
torch.set_num_threads(1)
from erasekit.text.world import build_world
from erasekit.text.models import load_text_model
from erasekit.text.unlearn import unlearn
from erasekit.text import muse
from erasekit.text.restor import reference_distance
from erasekit.text.reasoning_attack import step_by_step

w = build_world()
model, tok, _ = load_text_model("textworld")
ret, rtok, _ = load_text_model("textworld-retrained")
books = muse.privleak_texts(w)
news = ([d.text for d in w.docs("forget", "news")], [d.text for d in w.docs("holdout", "news")])


def detail(m, t):
    """Min-40% and mean log-prob (k=1) scores, official-orientation AUCs on books and news, separation margin."""
    out = {}
    for name, (mem, non) in (("books", books), ("news", news)):
        lm, ln = muse.token_logprobs(m, t, mem), muse.token_logprobs(m, t, non)
        for k in (0.4, 1.0):
            f, h = muse.min_k_scores(lm, k), muse.min_k_scores(ln, k)
            key = f"{name}_k{int(k * 100)}"
            out[key + "_auc"] = muse.forget_holdout_auc(f, h)
            out[key + "_forget_mean"] = float(np.mean(f))
            out[key + "_holdout_mean"] = float(np.mean(h))
            out[key + "_margin"] = float(min(f) - max(h))  # > 0: every forget text above every holdout text
    return out


auc_ret = muse.mink_auc(ret, rtok, *books)
det_ret = detail(ret, rtok)
out = sys.argv[1]


def emit(row):
    print(json.dumps({k: v for k, v in row.items() if k != "sbs_rows"}), flush=True)
    with open(out, "a") as fh:
        fh.write(json.dumps(row) + "\n")


def attack_summary(res):
    return {split: {s: {k: v for k, v in d.items()} for s, d in res[split].items()} for split in ("forget", "retain")
            if split in res}


if "--refs" in sys.argv:
    for name, (m, t) in (("base", (model, tok)), ("retrained", (ret, rtok))):
        t0 = time.time()
        met, _ = muse.evaluate_lm(m, t, w, auc_ret)
        if name == "base":
            met.update(reference_distance(m, t, ret, rtok, w))
        sbs = step_by_step(m, t, w)
        emit({"variant": name, **met, "detail": detail(m, t) if name == "base" else det_ret,
              "sbs": attack_summary(sbs), "sbs_rows": sbs["rows"], "eval_seconds": time.time() - t0})
forget, retain = w.forget_request()
for spec in [a for a in sys.argv[2:] if not a.startswith("--")]:
    method, _, opts = spec.partition(":")
    kw = {"threads": 1}
    for p in filter(None, opts.split(",")):
        k, v = p.split("=")
        kw[k] = float(v) if "." in v or "e-" in v else int(v) if v.isdigit() else v
    t = time.time()
    edit = unlearn(model, tok, method, forget, retain, forget_names=["forget-split"], **kw)
    secs = time.time() - t
    edit.save(f"/work/main/runs/textworld2/edits/{method}.safetensors")
    t0 = time.time()
    with edit.applied(model):
        met, _ = muse.evaluate_lm(model, tok, w, auc_ret)
        met.update(reference_distance(model, tok, ret, rtok, w))
        sbs = step_by_step(model, tok, w)
        d = detail(model, tok)
    emit({"variant": spec, **met, "seconds": secs, "detail": d, "sbs": attack_summary(sbs), "sbs_rows": sbs["rows"],
          "eval_seconds": time.time() - t0})
