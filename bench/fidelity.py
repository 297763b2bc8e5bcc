"""Benchmark: prompt fidelity, sampling throughput and peak memory of the shipped toy model (issue: foundation).

    python bench/fidelity.py                 # full run (~1,700 images), writes BENCHMARKS.md + runs/bench/fidelity.json
    python bench/fidelity.py --guidance 3,5,7.5 --n 100   # guidance sweep on direct prompts only
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: no spinning OpenMP threads

import torch  # noqa: E402

from erasekit import __version__, generate, load_pipeline
from erasekit.io import atomic_write_text
from erasekit.world.plugin import manifest as toyworld_manifest
from erasekit.report.markdown import md_table, replace_section
from erasekit.sampling import sampling_defaults
from erasekit.world import FAMILIES, load_oracle
from erasekit.world.fidelity import measure_fidelity

ROOT = Path(__file__).resolve().parents[1]
SETS = [(f, "direct", 200) for f in FAMILIES] + [(f, "heldout", 100) for f in FAMILIES] + [
    ("character", "keyword", 120), ("unsafe", "indirect", 100)]


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def throughput(pipe, guidance: float, batch: int, repeats: int = 3) -> float:
    prompts = ["a red circle in the style of Alva Renn"] * batch
    generate(pipe, prompts[:4], 0, steps=25, guidance=guidance)  # warm-up
    rates = []
    for r in range(repeats):
        t = time.perf_counter()
        generate(pipe, prompts, r * batch, steps=25, guidance=guidance, batch_size=batch)
        rates.append(batch / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--guidance", default=None, help="comma-separated guidance scales (sweep: direct prompts only)")
    ap.add_argument("--n", type=int, default=None, help="override images per set")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    pipe, oracle = load_pipeline("toyworld"), load_oracle()
    cmd = "python bench/fidelity.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    out_dir = ROOT / "runs" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)

    if args.guidance:
        rows = []
        for g in [float(x) for x in args.guidance.split(",")]:
            res = [measure_fidelity(pipe, oracle, f, "direct", args.n or 100, guidance=g) for f in FAMILIES]
            rows.append([g] + [r.accuracy for r in res])
            print(rows[-1], flush=True)
        text = md_table(["guidance"] + [f"{f} (direct)" for f in FAMILIES], rows)
        print(text)
        atomic_write_text(out_dir / "fidelity_sweep.json", json.dumps({"command": cmd, "rows": rows}, indent=1))
        return

    g = sampling_defaults(pipe).guidance
    results = []
    for family, kind, n in SETS:
        r = measure_fidelity(pipe, oracle, family, kind, args.n or n, guidance=g)
        results.append(r)
        print(f"{family:9s} {kind:8s} n={r.n:4d} acc={r.accuracy:.3f} all={r.all_labels:.3f} ({r.seconds:.1f}s)", flush=True)
    rate64 = throughput(pipe, g, 64)
    rate16 = throughput(pipe, g, 16)
    man = toyworld_manifest()
    info = {"command": cmd, "erasekit_version": __version__, "guidance": g, "steps": 25, "torch": torch.__version__,
            "threads": torch.get_num_threads(), "platform": platform.platform(),
            "fidelity": [r.__dict__ for r in results], "images_per_s_batch64": rate64, "images_per_s_batch16": rate16,
            "peak_rss_mib": peak_rss_mib(), "training_timings_s": man["timings_s"], "vae": man["vae"],
            "oracle_heldout_render_accuracy": man["oracle"]["heldout_render_accuracy"]}
    atomic_write_text(out_dir / "fidelity.json", json.dumps(info, indent=1))
    if args.no_write:
        return
    rows = [[r.family, r.kind, r.n, f"{100 * r.accuracy:.1f}%", f"{100 * r.all_labels:.1f}%"] for r in results]
    tm = man["timings_s"]
    acc_o = man["oracle"]["heldout_render_accuracy"]
    acc_v = man["vae"]["oracle_accuracy_on_reconstructions"]
    body = f"""Command: `{cmd}` (writes `runs/bench/fidelity.json`). Machine: {torch.get_num_threads()} CPU threads,
{platform.machine()}, torch {torch.__version__}. Model: the shipped `toyworld` (trained by `{man['command']}`,
dataset sha256 `{man['dataset']['content_sha256'][:16]}…`), DDIM 25 steps, guidance {g}, fixed seeds.

**Prompt fidelity** — fraction of images whose oracle label for the family equals the prompted concept
("all labels": every label the prompt constrains is right). Target: direct >= 90% for object, colour, artist, character.

{md_table(["family", "prompts", "images", "oracle agrees", "all labels"], rows)}

**Oracle** (held-out fresh renders, `erasekit world train`): {", ".join(f"{f} {100 * v:.1f}%" for f, v in acc_o.items())}.
On VAE reconstructions: {", ".join(f"{f} {100 * v:.1f}%" for f, v in acc_v.items())} (PSNR {man['vae']['psnr_db']:.1f} dB).

**Speed and memory** (this run): sampling {rate64:.1f} images/s at batch 64 and {rate16:.1f} images/s at batch 16
(25 DDIM steps with classifier-free guidance; median of 3); peak RSS of this benchmark process {peak_rss_mib():.0f} MiB.
Training (from the model's manifest, same kind of machine, sharing its 2 cores with other work at times): oracle
{tm['oracle_s'] / 60:.1f} min, VAE {tm['vae_s'] / 60:.1f} min, contrastive text-encoder pretraining
{tm.get('text_s', 0) / 60:.1f} min, text encoder + UNet {tm['diffusion_s'] / 60:.1f} min, total {tm['total_s'] / 60:.1f} min.

Why "all labels" is lower for unsafe prompts: the gore/nudity overlays cover part of the subject, so the object is
sometimes misread; the unsafe concept itself is seen in 96-99% of images.
"""
    replace_section(ROOT / "BENCHMARKS.md", "Toy model quality and speed", body)
    print(body)


if __name__ == "__main__":
    main()
