"""Benchmark: closed-form erasers at SD1.5 size on CPU (issue 16), as ratios to UCE in the same process.

    OMP_WAIT_POLICY=PASSIVE python bench/closed_form_speed.py                        # every closed form, 1 and 100
    python bench/closed_form_speed.py --methods uce,rece --counts 1,100 --repeats 3 --threads 1

A random-weight SD1.5-sized UNet + CLIP ViT-L/14 text encoder (`erasekit.erasers.bench.sd15_sized`; shapes, hence
work, as the real model; nothing downloaded) is built once. Per method and concept count (made-up artist names,
`concept_names`): one cold call (first use: RECE forms and caches the float64 Gram of the K/V weights here), then
`--repeats` timed calls whose median is reported, with its ratio to UCE's median at the same count. Also measured: the
text encoder's throughput (77-token prompts per second) and, per method, how many 77-row prompts it must encode, which
gives the encoding floor (RECE: the concepts, guides and preserve prompts, all 77 rows; MACE: n_prompts templates per
concept and per anchor). The machine load (`uptime`) before and after is recorded: on a shared machine absolute times
vary, ratios much less. Writes JSON (default runs/bench/closed_form_speed.json).

vision-unlearning 1.0.0's UCE is timed against erasekit's by bench/peers/vu_uce_speed.py (its module-level imports
of torchvision and `datasets` are replaced by empty stand-ins in that process only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("uce", "rece", "mace", "speed", "trce", "realera")


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "?"


def encoder_throughput(pipe, n: int = 16, repeats: int = 3) -> float:
    """Full-length (77-row) prompts encoded per second (median of `repeats`)."""
    from erasekit.erasers._closed_form import encode
    from erasekit.erasers.bench import concept_names

    prompts = [f"a painting by {c}" for c in concept_names(n)]
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        encode(pipe, prompts)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--counts", default="1,100")
    ap.add_argument("--mace-counts", default="1,10", help="MACE encodes n_prompts x 77 rows per concept")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--slow-s", type=float, default=0.0,
                    help="if > 0: a cold call slower than this is not repeated (row says runs: 1)")
    ap.add_argument("--json-out", default="runs/bench/closed_form_speed.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from erasekit.erasers import erase
    from erasekit.erasers.bench import concept_names, machine, sd15_sized

    out: dict = {"command": "python " + " ".join(sys.argv), "machine": machine(), "uptime_before": uptime(),
                 "repeats": args.repeats, "rows": []}
    t0 = time.perf_counter()
    pipe = sd15_sized()
    out["load_s"] = round(time.perf_counter() - t0, 2)
    erase(pipe, "uce", erase=["warm up"])  # first-call overheads (thread pools, lazy imports)
    out["encode_prompts_per_s"] = round(encoder_throughput(pipe), 3)
    print(f"built in {out['load_s']} s; text encoder {out['encode_prompts_per_s']} prompts (77 rows)/s", flush=True)
    uce_median: dict[int, float] = {}
    methods = args.methods.split(",")
    if "uce" in methods:
        methods = ["uce"] + [m for m in methods if m != "uce"]
    for method in methods:
        counts = args.mace_counts if method == "mace" else args.counts
        for n in map(int, counts.split(",")):
            names = concept_names(n)
            t = time.perf_counter()
            edit = erase(pipe, method, erase=names)
            cold = time.perf_counter() - t
            times = []
            for _ in range(0 if 0 < args.slow_s < cold else args.repeats):
                t = time.perf_counter()
                erase(pipe, method, erase=names)
                times.append(time.perf_counter() - t)
            med = statistics.median(times) if times else cold
            if method == "uce":
                uce_median[n] = med
            row = {"method": method, "concepts": n, "runs": max(len(times), 1), "cold_s": round(cold, 3),
                   "median_s": round(med, 3),
                   "times_s": [round(x, 3) for x in times],
                   "ratio_to_uce": round(med / uce_median[n], 2) if n in uce_median else None}
            info = edit.manifest.get("info", {})
            if method == "mace":
                row["encoded_prompts"] = len(set(info.get("templates", []))) * (n + 1)  # concept + shared anchor
            elif method == "rece":
                row["encoded_prompts"] = n + 2  # concepts + guide + "" (77 rows each)
            if "encoded_prompts" in row:
                row["encode_floor_s"] = round(row["encoded_prompts"] / out["encode_prompts_per_s"], 2)
            out["rows"].append(row)
            print(json.dumps(row), flush=True)
    out["uptime_after"] = uptime()
    path = ROOT / args.json_out
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
