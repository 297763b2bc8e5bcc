"""Benchmark: the closed forms erasing 1, 10, 50 and 100 concepts at once on the toy world (issue 16).

    OMP_NUM_THREADS=1 python bench/multi_concept.py       # ~10 min; writes runs/bench/multi_concept.json
    OMP_NUM_THREADS=1 python bench/multi_concept.py --methods uce,speed --counts 1,100 --n 8

Results are copied by hand into BENCHMARKS.md ("Closed forms: scaling and speed" under Erasure).

The toy world has 18 artists; the erase set for N concepts is: the 4 probe artists (always first; N=1 erases the
first only), then the other toy artists except the 2 held out, then made-up artist names
(`erasekit.erasers.bench.concept_names`, e.g. "Ada Marsh"; the toy model never saw them, so they only load the solve
the way a long erase list does). Efficacy = % of the erased probes' direct-prompt images the oracle does NOT see the
artist in; specificity = % of the held-out concepts' (2 artists, 1 object, 1 character) direct-prompt images where it
still sees them (base model in the first row). Every method at its defaults, guide "art", no preserve prompts.
Runs through `erasekit.erase` + `erasekit.generation.generate` + the world's evaluator (`toyworld-oracle`).shows
(not the evaluation harness, which was being rebuilt when this was written).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from erasekit import load_pipeline  # noqa: E402
from erasekit.erasers import erase  # noqa: E402
from erasekit.erasers.bench import concept_names, machine  # noqa: E402
from erasekit.evaluators import get_evaluator  # noqa: E402
from erasekit.generation import generate  # noqa: E402
from erasekit.worlds import get_world  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("uce", "rece", "mace", "realera", "speed", "trce")
COUNTS = (1, 10, 50, 100)


def erase_set(world, n: int, probes: list[str], held: list[str]) -> list[str]:
    """The first n names: probes, other toy artists (not held out), then made-up names."""
    artists = [a for a in world.concepts()["artist"] if a not in probes and a not in held]
    synthetic = [s for s in concept_names(100) if s not in world.concepts()["artist"]]
    return (probes + artists + synthetic)[:n]


def show_rate(pipe, oracle, world, concept: str, n: int, steps: int, seed: int) -> float:
    prompts = [p.text for p in world.prompts(concept, "direct", n, seed)]
    images = generate(pipe, prompts, seeds=seed, steps=steps)
    return float(np.mean(oracle.shows(images, concept)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--counts", default=",".join(map(str, COUNTS)))
    ap.add_argument("--n", type=int, default=4, help="direct prompts per probed concept")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--json-out", default="runs/bench/multi_concept.json")
    args = ap.parse_args()
    t0 = time.time()
    pipe = load_pipeline("toyworld")
    world, oracle = get_world("toyworld"), get_evaluator("toyworld-oracle")
    artists = list(world.concepts()["artist"])
    probes, held = artists[:4], artists[-2:] + ["circle", "Kiko"]
    rows = []

    def measure(p, erased: list[str]) -> tuple[float, float]:
        eff = 100 * (1 - np.mean([show_rate(p, oracle, world, c, args.n, args.steps, 0) for c in probes
                                  if c in erased])) if erased else float("nan")
        spec = 100 * np.mean([show_rate(p, oracle, world, c, args.n, args.steps, 0) for c in held])
        return float(eff), float(spec)

    base_eff, base_spec = measure(pipe, probes)
    rows.append({"method": "base", "concepts": 0, "efficacy": base_eff, "specificity": base_spec, "edit_s": 0.0})
    print(f"base: probes erased {base_eff:.0f}%, held-out shown {base_spec:.0f}%", flush=True)
    for method in args.methods.split(","):
        for n in map(int, args.counts.split(",")):
            names = erase_set(world, n, probes, held)
            t = time.perf_counter()
            edit = erase(pipe, method, erase=names, guide="art")
            seconds = time.perf_counter() - t
            with edit.applied(pipe):
                eff, spec = measure(pipe, names)
            rows.append({"method": method, "concepts": n, "efficacy": eff, "specificity": spec,
                         "edit_s": round(seconds, 3)})
            print(f"{method} x{n}: efficacy {eff:.0f}%  specificity {spec:.0f}%  edit {seconds:.2f} s", flush=True)
    out = {"command": "python " + " ".join(sys.argv), "machine": machine(), "n": args.n, "steps": args.steps,
           "probes": probes, "held_out": held, "rows": rows, "seconds": round(time.time() - t0, 1)}
    path = ROOT / args.json_out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path} ({out['seconds']} s)")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
