"""Smoke check (<= 60 s) of Finding Dori against memorized-subspace pruning on one memorized pair: prune (or load a
cached pruning edit), check the pair's caption no longer copies at seed 0, attack, report the RMSE to the training
image of the attack's image (verbatim below the pair's threshold).

    python bench/mempruning/dori_smoke.py --model /tmp/mp/v2s2000 --edit /tmp/mp/ffn30.safetensors \
        --skill-ratio 0.3 --select-ratio 0.0 --steps 20 --radius 0.1 --lr 0.01 --objective denoise
(the first call with a new --edit path only prunes and saves the edit, the second attacks.)
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--edit", required=True, help="pruning edit file (made and saved on the first call)")
    ap.add_argument("--skill-ratio", type=float, default=0.3)
    ap.add_argument("--select-ratio", type=float, default=0.0)
    ap.add_argument("--layers", default="ffn")
    ap.add_argument("--count", type=int, default=1000, help="attack the first pair duplicated this often")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--radius", type=float, default=None)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--objective", default="magnitude")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from memorization_pruning import fresh_captions

    from erasekit import erase, load_pipeline
    from erasekit.attacks import run_attack
    from erasekit.edits import Edit
    from erasekit.memorization import verbatim_copies
    from erasekit.worlds import get_world

    t0 = time.time()
    pairs = get_world("toyworld").memorized_pairs(a.model, references=16)
    pipe = load_pipeline(os.path.join(a.model, "pipeline"))
    if not os.path.exists(a.edit):
        e = erase(pipe, "mempruning", erase=[p.caption for p in pairs if p.count >= 100],
                  preserve=fresh_captions(4, 778), skill_ratio=a.skill_ratio, select_ratio=a.select_ratio, seeds=1,
                  layers=a.layers)
        e.save(a.edit)
        print(f"pruned {e.manifest['info']['pruned_weights']} weights; saved {a.edit} ({time.time() - t0:.0f} s)")
        return
    base = copy.deepcopy(pipe)
    Edit.load(a.edit, pipe=pipe).apply(pipe)
    p = next(p for p in pairs if p.count == a.count)

    def copies(images):
        return verbatim_copies(images, p.image, p.references)[0]

    r = run_attack("finding_dori", pipe, p.caption, prompts=[p.caption], success=copies, steps=a.steps,
                   radius=a.radius, lr=a.lr, eval_every=a.steps, seed=0, objective=a.objective,
                   base_pipe=base if a.objective == "denoise" else None)
    lg = r.logs[0]
    _, dist, thr = verbatim_copies(r.generate(pipe), p.image, p.references)
    rmse = float(dist[0])
    print(f"pruned copies at seed 0: {r.pre[0]}; after attack: {r.post[0]}; RMSE {rmse:.1f} (threshold {thr:.1f}); "
          f"distance {lg.extra.get('relative_distance')}; loss {lg.extra.get('start_loss')} -> "
          f"{lg.extra.get('end_loss')}; {lg.steps} steps, {lg.seconds:.1f} s; total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
