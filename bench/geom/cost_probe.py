"""Cost cells of issue 18's method table: run ONE method's one-off work and a small generation in this process, so
that `/usr/bin/time -v` around it gives the method's peak memory (compare with --method base).

    OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/python bench/geom/cost_probe.py --method base --model toyworld-v2
    ... --method mempruning --model /work/runs/train-v2g     # official setting (ffn, skill 0.01, select 0.5)
    ... --method sae --model toyworld --sae runs/sae/toy.safetensors
    ... --method geom --model toyworld-v2 --edit runs/geom18/geom.safetensors

Prints one JSON line: method, one-off seconds (wall / CPU), parameters changed, generation seconds (wall / CPU) of
--images images (25 DDIM steps, guidance 5) with the method in place.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PROMPTS = ("a red circle in the style of Alva Renn", "Zorbo by Felix Orme", "a blue square", "a green ring")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True, choices=("base", "mempruning", "sae", "geom"))
    ap.add_argument("--model", default="toyworld-v2")
    ap.add_argument("--sae", default="runs/sae/toy.safetensors")
    ap.add_argument("--edit", default="runs/geom18/geom.safetensors")
    ap.add_argument("--images", type=int, default=16)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # as bench/memorization_pruning.py (pruned weights give subnormals)
    from pathlib import Path

    from erasekit import load_pipeline
    from erasekit.shields import get_shield, shielded_generate

    folder = Path(args.model)
    pipe = load_pipeline(str(folder / "pipeline") if (folder / "pipeline").is_dir() else args.model)
    out: dict = {"method": args.method, "model": args.model}
    t, c = time.perf_counter(), time.process_time()
    shield, changed = None, 0
    if args.method == "mempruning":
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from memorization_pruning import fresh_captions

        from erasekit.erasers import erase
        from erasekit.worlds import get_world

        pairs = get_world("toyworld").memorized_pairs(str(folder), references=16)
        edit = erase(pipe, "mempruning", erase=[p.caption for p in pairs if p.count >= 100],
                     preserve=fresh_captions(16, 778), skill_ratio=0.01, select_ratio=0.5, seeds=2, layers="ffn")
        changed = int(edit.manifest["info"]["pruned_weights"])
        edit.apply(pipe)
    elif args.method == "sae":
        shield = get_shield(f"sae:file={args.sae},erase=Zorbo;Alva Renn;nudity", world="toyworld")
    elif args.method == "geom":
        from erasekit.edits import Edit

        edit = Edit.load(args.edit, pipe=pipe)
        changed = edit.num_parameters()
        edit.apply(pipe)
        shield = get_shield("geom_negative", edit=edit)
    out.update(one_off_wall_s=round(time.perf_counter() - t, 1), one_off_cpu_s=round(time.process_time() - c, 1),
               parameters_changed=changed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.images)]
    t, c = time.perf_counter(), time.process_time()
    shielded_generate(pipe, prompts, list(range(args.images)), shields=shield, guidance=5.0)
    out.update(generate_wall_s=round(time.perf_counter() - t, 1), generate_cpu_s=round(time.process_time() - c, 1),
               images=args.images)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
