"""`erasekit mark bench` with two extra knobs the CLI does not have yet: the generation guidance of clean and marked
images (--guidance; default the model's 5.0) and forgery attacks through the proxy (--forgery reprompt:...,
imprint:...). Same results.json / table.md as the CLI.

Run (example): OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1 .venv/bin/python bench/marks15/run.py -n 32 --keys 4 \\
    --method "gaussian_shading:decoder_steps=50,inversion_prompt=caption,inversion_guidance=2,fixed_point=3" \\
    --attack none --attack jpeg:quality=50 --guidance 2 --out runs/marks15/x
"""
import argparse

import torch

torch.set_num_threads(1)
import erasekit  # noqa: E402
from erasekit.evaluators import get_evaluator  # noqa: E402
from erasekit.io import check_writable  # noqa: E402
from erasekit.marks.bench import run_bench, write_results  # noqa: E402
from erasekit.worlds import world_of_model  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("-n", type=int, default=32)
ap.add_argument("--keys", type=int, default=4)
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--method", action="append", required=True)
ap.add_argument("--attack", action="append", default=None)
ap.add_argument("--forgery", action="append", default=[])
ap.add_argument("--guidance", type=float, default=None)
ap.add_argument("--out", required=True)
ap.add_argument("--overwrite", action="store_true")
args = ap.parse_args()
check_writable(f"{args.out}/results.json", args.overwrite, what="results")
pipe = erasekit.load_pipeline("toyworld")
world = world_of_model(pipe)
res = run_bench(pipe, args.method, args.attack or ["none"], n=args.n, n_keys=args.keys, seed=args.seed,
                evaluator=get_evaluator(world.evaluator), world=world, log=lambda s: print(s, flush=True),
                guidance=args.guidance, forgeries=args.forgery)
js, md = write_results(res, args.out)
print(md.read_text())
