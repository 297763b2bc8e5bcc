"""ItD's SAE zero-shot classifier on the toy model: detection AUC of each concept's prompts against other prompts,
and the shield's decisions (true/false deactivation rates) with one SAE and one or several concepts. No images: the
erasure itself is measured by the harness (`erasekit eval --shield sae:...`, commands in the notes).

    erasekit sae train --out runs/sae/toy.safetensors
    python bench/sae.py --sae runs/sae/toy.safetensors --out runs/sae/classifier.json

Positives: the world's evaluation prompts of the concept (direct, heldout, keyword / indirect: wording never used to
find the features or the threshold). Negatives: direct prompts of its nearest same-family neighbours and of
unrelated concepts. AUC by ranks (erasekit.membership.auc)."""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from erasekit import load_pipeline  # noqa: E402
from erasekit.membership import auc  # noqa: E402
from erasekit.shields import get_shield  # noqa: E402
from erasekit.worlds import get_world  # noqa: E402

KINDS = ("direct", "heldout", "keyword", "indirect")


def sets(world, concept: str, n: int, seed: int, pipe=None) -> tuple[dict[str, list[str]], list[str]]:
    pos = {k: [p.text for p in world.prompts(concept, k, n, seed)] for k in KINDS}
    pos = {k: v for k, v in pos.items() if v}
    neg = [p.text for nb in world.neighbours(concept, 2, pipe) for p in world.prompts(nb, "direct", n // 2, seed)]
    neg += [p.text for p in world.unrelated(concept, n, seed)]
    return pos, neg


def measure(shield, pipe, pos: dict[str, list[str]], neg: list[str]) -> dict:
    s_neg = shield.scores(pipe, neg)
    out = {"fpr": float(np.mean(s_neg >= shield.threshold)), "kinds": {}}
    all_pos = []
    for k, texts in pos.items():
        s = shield.scores(pipe, texts)
        all_pos.append(s)
        out["kinds"][k] = {"auc": auc(np.r_[s, s_neg], np.r_[np.ones(len(s), bool), np.zeros(len(s_neg), bool)]),
                           "tpr": float(np.mean(s >= shield.threshold))}
    s = np.concatenate(all_pos)
    out["auc_all"] = auc(np.r_[s, s_neg], np.r_[np.ones(len(s), bool), np.zeros(len(s_neg), bool)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sae", required=True)
    ap.add_argument("--concepts", default="Zorbo,Alva Renn,nudity,triangle,Mossy")
    ap.add_argument("--options", default="", help="extra sae shield options, e.g. top=64")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", default="ablation,official,ablation-name-only")
    ap.add_argument("--no-multi", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pipe = load_pipeline("toyworld")
    world = get_world("toyworld")
    concepts = [c.strip() for c in args.concepts.split(",") if c.strip()]
    opts = f",{args.options}" if args.options else ""
    results: dict = {"sae": args.sae, "options": args.options, "n": args.n, "single": {}, "multi": {}}
    for variant in args.variants.split(","):
        score = variant.split("-")[0]
        extra = ",keywords=false" if variant.endswith("name-only") else ""
        rows = {}
        for c in concepts:
            t0 = time.perf_counter()
            try:
                shield = get_shield(f"sae:file={args.sae},score={score}{extra}{opts}", concepts=[c], pipe=pipe)
            except Exception as e:  # report a concept with no feature instead of stopping
                rows[c] = {"error": str(e)}
                continue
            fit = time.perf_counter() - t0
            pos, neg = sets(world, c, args.n, args.seed, pipe)
            rows[c] = {"features": len(shield.features[c]), "threshold": shield.threshold, "fit_seconds": fit,
                       **measure(shield, pipe, pos, neg)}
            print(variant, c, json.dumps(rows[c]), flush=True)
        results["single"][variant] = rows
    if not args.no_multi:  # one SAE, every concept at once: each concept's prompts vs the others' negatives
        t0 = time.perf_counter()
        multi = get_shield(f"sae:file={args.sae},erase={';'.join(concepts)}{opts}", concepts=[concepts[0]],
                           pipe=pipe)
        results["multi"]["fit_seconds"] = time.perf_counter() - t0
        results["multi"]["features"] = {k: len(v) for k, v in multi.features.items()}
        results["multi"]["union"] = len(multi.all_features)
        for c in concepts:
            pos, neg = sets(world, c, args.n, args.seed, pipe)
            # prompts naming another protected concept are positives of the multi-concept shield, not negatives
            neg = [p for p in neg if not any(o.lower() in p.lower() for o in concepts)]
            results["multi"][c] = measure(multi, pipe, pos, neg)
            print("multi", c, json.dumps(results["multi"][c]), flush=True)
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
