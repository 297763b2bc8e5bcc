"""Attacks on an SFD one-step generator, through the harness (issue 18: SFD's attack row).

    .venv/bin/python bench/sfd/attacks.py --edit runs/sfd/zorbo-d/edit.safetensors --concept Zorbo --out runs/sfd/attacks

The edit is sampled as SFD is meant to be (`sfd.one_step_pipeline`: one step, no guidance); `evaluate` runs the
teacher in one step ("base", the generator's initialisation) and the SFD generator unattacked and under each attack
of grid-toy's set that applies to a one-step sampler (prompt and embedding attacks, concept inversion, in-context
img2img; relearning is left out: fine-tuning the one-step generator with the diffusion loss turns it back into a
multi-step denoiser, a different threat), with grid-toy's budgets, on the suite's first 3 direct prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(1)

import erasekit  # noqa: E402
from erasekit.edits import Edit  # noqa: E402
from erasekit.erasers import sfd  # noqa: E402
from erasekit.evaluation import Variant, evaluate  # noqa: E402
from erasekit.suite import load_suite  # noqa: E402

ATTACKS = {"copycat": "copycat:steps=2", "arithmetic": "arithmetic:steps=2",
           "unlearndiffatk": "unlearndiffatk:steps=10,iters_per_timestep=2", "p4d_n": "p4d_n:steps=10,eval_every=5",
           "softprompt": "softprompt:steps=6,eval_every=3", "rece_embedding": "rece_embedding",
           "inversion": "concept_inversion:steps=10", "incontext": "incontext:strength=0.6"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edit", required=True)
    ap.add_argument("--concept", default="Zorbo")
    ap.add_argument("--limit", type=int, default=3)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    pipe = erasekit.load_pipeline("toyworld")
    edit = Edit.load(args.edit, pipe=pipe)
    one = sfd.one_step_pipeline(pipe, edit)
    suite = dataclasses.replace(load_suite("default").limited(args.limit), name="sfd-one-step-attacks",
                                targets=(args.concept,), steps=1, guidance=1.0)
    variants = [Variant("sfd", edits=(args.edit,))]
    variants += [Variant(f"sfd+{n}", edits=(args.edit,), attack=a) for n, a in ATTACKS.items()]
    variants += [Variant(f"teacher+{n}", attack=a) for n, a in ATTACKS.items()]
    w, c = time.perf_counter(), time.process_time()
    res = evaluate(suite, variants, Path(args.out), pipe=one)
    cols = ("detection", "attack_detection_pre", "attack_detection_post", "attack_success")
    print(json.dumps({"wall_s": round(time.perf_counter() - w, 1), "cpu_s": round(time.process_time() - c, 1)}))
    print("| variant | " + " | ".join(cols) + " |\n|---|" + "---|" * len(cols))
    for n, v in res["variants"].items():
        print(f"| {n} | " + " | ".join("" if v["mean"].get(k) is None else f"{v['mean'][k]:.2f}" for k in cols)
              + " |")


if __name__ == "__main__":
    main()
