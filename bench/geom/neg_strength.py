"""Diagnostic (issue 18): how strongly do a Geom-Erasing edit's tokens steer the UNet? On marked training images of
data.npz noised to t, compares || eps(neg) - eps("") || (neg = "" + the geometric tokens, the inference negative) and
|| eps(caption + tokens) - eps(caption) || with || eps(caption) - eps("") || (the guidance direction), over the whole
latent and over the mark's band of the latent (its bottom quarter of rows, right half of columns).

    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/neg_strength.py --edit runs/geom18/geom120.safetensors
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld-v2")
    ap.add_argument("--edit", required=True)
    ap.add_argument("--data", default="runs/geom18/data.npz")
    ap.add_argument("--n", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    from erasekit import load_pipeline
    from erasekit.edits import Edit
    from erasekit.erasers.fewshot import encode_latents
    from erasekit.erasers.geom_erasing import GeomTokenSet, encode_with_tokens
    from erasekit.evaluators import get_evaluator
    from erasekit.sampling import encode_prompts

    pipe = load_pipeline(args.model)
    z = np.load(args.data)
    images, captions = z["images"], [str(c) for c in z["captions"]]
    idx = np.flatnonzero(get_evaluator("toyworld-mark").shows(images, "mark"))[:args.n]
    caps = [captions[i] for i in idx]
    edit = Edit.load(args.edit, pipe=pipe)
    tok = GeomTokenSet.from_edit(edit)
    out = {"edit": args.edit, "n": len(idx)}
    g = torch.Generator().manual_seed(3)
    with torch.no_grad(), edit.applied(pipe):
        lat = encode_latents(pipe, images[idx], g, flip=False)
        h, w = lat.shape[-2:]
        cell = (slice(None), slice(None), slice(h * 3 // 4, h), slice(w // 2, w))  # the mark's bottom-right band
        e_u = encode_prompts(pipe, [""] * len(idx))
        e_c = encode_prompts(pipe, caps)
        e_n = encode_with_tokens(pipe, [""] * len(idx), [tok.rows()] * len(idx), tok.vectors)
        e_ct = encode_with_tokens(pipe, caps, [tok.rows()] * len(idx), tok.vectors)
        for t in (300, 500, 700):
            eps = torch.randn(lat.shape, generator=g)
            tt = torch.full((len(idx),), t)
            x = pipe.scheduler.add_noise(lat, eps, tt)
            p = {k: pipe.unet(x, tt, encoder_hidden_states=e).sample for k, e in
                 (("u", e_u), ("c", e_c), ("n", e_n), ("ct", e_ct))}

            def nrm(a, b, region=None):
                d = a - b if region is None else (a - b)[region]
                return round(float(d.flatten(1).norm(dim=1).mean()), 4)

            out[f"t={t}"] = {"|c-u|": nrm(p["c"], p["u"]), "|neg-u|": nrm(p["n"], p["u"]),
                             "|c+tok - c|": nrm(p["ct"], p["c"]), "mark cells |c-u|": nrm(p["c"], p["u"], cell),
                             "mark cells |neg-u|": nrm(p["n"], p["u"], cell),
                             "mark cells |c+tok - c|": nrm(p["ct"], p["c"], cell)}
            print(t, out[f"t={t}"], flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
