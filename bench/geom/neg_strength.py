"""Diagnostic (issue 18): how strongly do a Geom-Erasing edit's tokens steer the UNet? On marked training images of
data.npz noised to t, compares || eps(neg) - eps("") || (neg = "" + the geometric tokens, the inference negative) and
|| eps(caption + tokens) - eps(caption) || with || eps(caption) - eps("") || (the guidance direction), over the whole
latent and over the mark's band of the latent (its bottom quarter of rows, right half of columns). "pull ratio" =
mark-band || eps(neg) - eps("") || / mark-band || eps(c) - eps("") || (the binding check: ~0.06 for the default edit).
Session 8 adds two signed reads: "err(c+tok)/err(c)" (mark-band denoising error of the marked images with the tokens
over without: < 1 = the tokens explain the mark) and "mark cos" (on unmarked images stamped with the mark, the
cosine between -(eps(neg) - eps("")) and the mark's latent signature: > 0 = the negative points at the mark).

    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/neg_strength.py --edit runs/geom18/geom120.safetensors
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def measure(pipe, edit, data: str, n: int = 16, ts: tuple[int, ...] = (300, 500, 700)) -> dict:
    """The binding numbers of `edit` (an Edit holding geometric tokens) on the first `n` marked images of `data`."""
    from erasekit.erasers.fewshot import encode_latents
    from erasekit.erasers.geom_erasing import GeomTokenSet, encode_with_tokens
    from erasekit.evaluators import get_evaluator
    from erasekit.sampling import encode_prompts
    from erasekit.toyworld.dataset_v2 import stamp_mark

    z = np.load(data)
    images, captions = z["images"], [str(c) for c in z["captions"]]
    idx = np.flatnonzero(get_evaluator("toyworld-mark").shows(images, "mark"))[:n]
    caps = [captions[i] for i in idx]
    tok = GeomTokenSet.from_edit(edit)
    out: dict = {"n": len(idx), "position": tok.position}
    g = torch.Generator().manual_seed(3)
    with torch.no_grad(), edit.applied(pipe):
        lat = encode_latents(pipe, images[idx], g, flip=False)
        h, w = lat.shape[-2:]
        cell = (slice(None), slice(None), slice(h * 3 // 4, h), slice(w // 2, w))  # the mark's bottom-right band
        e_u = encode_prompts(pipe, [""] * len(idx))
        e_c = encode_prompts(pipe, caps)
        e_n = encode_with_tokens(pipe, [""] * len(idx), [tok.rows()] * len(idx), tok.vectors, tok.position)
        e_ct = encode_with_tokens(pipe, caps, [tok.rows()] * len(idx), tok.vectors, tok.position)
        clean = np.flatnonzero(~get_evaluator("toyworld-mark").shows(images, "mark"))[:len(idx)]
        stamped = np.stack([stamp_mark(im) for im in images[clean]])
        gs = torch.Generator().manual_seed(4)
        lat_s = encode_latents(pipe, stamped, gs, flip=False)
        m = lat_s - encode_latents(pipe, images[clean], torch.Generator().manual_seed(4), flip=False)  # the mark
        e_cs = encode_prompts(pipe, [captions[i] for i in clean])
        for t in ts:
            eps = torch.randn(lat.shape, generator=g)
            tt = torch.full((len(idx),), t)
            x = pipe.scheduler.add_noise(lat, eps, tt)
            p = {k: pipe.unet(x, tt, encoder_hidden_states=e).sample for k, e in
                 (("u", e_u), ("c", e_c), ("n", e_n), ("ct", e_ct))}

            def nrm(a, b, region=None):
                d = a - b if region is None else (a - b)[region]
                return round(float(d.flatten(1).norm(dim=1).mean()), 4)

            r = {"|c-u|": nrm(p["c"], p["u"]), "|neg-u|": nrm(p["n"], p["u"]),
                 "|c+tok - c|": nrm(p["ct"], p["c"]), "mark cells |c-u|": nrm(p["c"], p["u"], cell),
                 "mark cells |neg-u|": nrm(p["n"], p["u"], cell),
                 "mark cells |c+tok - c|": nrm(p["ct"], p["c"], cell)}
            r["pull ratio"] = round(r["mark cells |neg-u|"] / max(r["mark cells |c-u|"], 1e-12), 3)
            # do the tokens explain the mark? denoising error in the mark band with caption + tokens / caption alone
            err = {k: float(((p[k] - eps)[cell] ** 2).mean()) for k in ("c", "ct")}
            r["mark cells err(c+tok)/err(c)"] = round(err["ct"] / err["c"], 3)
            # is the negative's pull aimed at the mark? unmarked images vs the same images stamped with the mark
            # (m = their latent difference in the band): cosine of -(eps(neg) - eps("")) with m on the stamped
            # images (> 0: the negative predicts the mark, so guidance pushes away from it); same for the caption
            xs = pipe.scheduler.add_noise(lat_s, eps[:len(lat_s)], tt[:len(lat_s)])
            q = {k: pipe.unet(xs, tt[:len(lat_s)], encoder_hidden_states=e).sample for k, e in
                 (("u", e_u[:len(lat_s)]), ("n", e_n[:len(lat_s)]), ("c", e_cs))}
            mb = m[cell].flatten(1)
            for k, name in (("n", "mark cos -(neg-u)"), ("c", "mark cos -(c-u)")):
                d = -(q[k] - q["u"])[cell].flatten(1)
                r[name] = round(float(torch.nn.functional.cosine_similarity(d, mb, dim=1).mean()), 3)
            out[f"t={t}"] = r
            print(t, r, flush=True)
    for key in ("pull ratio", "mark cells err(c+tok)/err(c)", "mark cos -(neg-u)", "mark cos -(c-u)"):
        out[f"mean {key}"] = round(float(np.mean([out[f"t={t}"][key] for t in ts])), 3)
    return out


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

    pipe = load_pipeline(args.model)
    out = {"edit": args.edit, **measure(pipe, Edit.load(args.edit, pipe=pipe), args.data, args.n)}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
