"""Benchmark: every eraser (closed-form: UCE, RECE, MACE stage 1, RealEra, LEACE; fine-tuning: see VARIANTS) on one
toy-world leaderboard, and the closed forms at real scale.

    python bench/erasure.py                  # both parts; writes BENCHMARKS.md (## Erasure)
    python bench/erasure.py --part toy --n 24 --no-write      # quicker look, nothing written
    python bench/erasure.py --part real      # only the SD1.5-sized timing (also: erasekit bench closed-form)

Toy world (shipped model + oracle), per concept (one artist, character, object, unsafe) and method:
  efficacy     oracle detection rate of the erased concept on direct prompts, base -> edited
  generality   the same on held-out paraphrases (and keyword-only prompts for the character)
  specificity  oracle accuracy on the family's other concepts, base -> edited (and on the erased concept's two
               nearest neighbours by text embedding); object/colour accuracy on those prompts
  fidelity     mean |pixel difference| (0-255) to the base model's images, same seeds, unrelated prompts
  cost         edit time, peak RSS increase during the edit
Real scale: random SD1.5-sized UNet + CLIP ViT-L/14 text encoder, edit time for 1 and 100 concepts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: no spinning OpenMP threads

import torch  # noqa: E402

from erasekit import __version__, erase, generate, load_pipeline
from erasekit.erasers.bench import machine, measure_peak, real_scale_benchmark
from erasekit.erasers import get_eraser
from erasekit.erasers.concepts import toyworld_hooks, toyworld_request, toyworld_templates
from erasekit.io import atomic_write_text
from erasekit.world.plugin import assets_dir as toyworld_dir
from erasekit.sampling import default_guidance
from erasekit.world import CATALOGUE, load_oracle, prompts_for

ROOT = Path(__file__).resolve().parents[1]
CONCEPTS = {"artist": "Alva Renn", "character": "Zorbo", "object": "triangle", "unsafe": "gore"}
# method variants: (eraser, options); "+tpl" variants also see the toy world's training-caption templates
VARIANTS = {
    "uce": ("uce", {}),
    "uce+tpl": ("uce", {"expand_prompts": True}),
    "rece": ("rece", {}),
    "mace": ("mace", {}),
    "realera": ("realera", {}),
    "leace": ("leace", {}),
    "esd-x": ("esd", {"check_every": 25}),
    "esd-x+tpl": ("esd", {"check_every": 25}),
    "esd-u+tpl": ("esd", {"train_method": "esd-u", "lr": 1e-4, "check_every": 25}),
    "esd-x+tpl+early": ("esd", {"max_stop_frac": 0.5, "check_every": 25}),
    "spm+tpl": ("spm", {"check_every": 25}),
    "spm+tpl+early": ("spm", {"max_stop_frac": 0.5, "check_every": 25}),
    "fewshot": ("fewshot", {}),
    "advunlearn": ("advunlearn", {}),
}
TEMPLATED = {"uce+tpl", "mace", "leace", "esd-x+tpl", "esd-u+tpl", "esd-x+tpl+early", "spm+tpl", "spm+tpl+early"}
# fine-tuning variants get TrainHooks whose early stop is the oracle on direct prompts (erasers/concepts.toyworld_hooks)


def detection(oracle, images: np.ndarray, family: str, concept: str) -> float:
    """Fraction of images whose oracle label for `family` is `concept` (%)."""
    return 100.0 * float(np.mean([p[family] == concept for p in oracle.predict(images)]))


def nearest_neighbours(pipe, family: str, concept: str, k: int = 2) -> list[str]:
    """The `k` concepts of `family` whose names' text-encoder rows (mean over tokens) are closest to `concept`'s."""
    from erasekit.erasers._closed_form import encode

    names = [c.name for c in CATALOGUE.items_by_family()[family] if getattr(c, "core", True)]
    enc = encode(pipe, names)
    vec = torch.stack([enc.hidden[i, 1:int(enc.lengths[i])].mean(0) for i in range(len(names))])
    sims = torch.nn.functional.cosine_similarity(vec, vec[names.index(concept)][None])
    order = [names[i] for i in sims.argsort(descending=True).tolist() if names[i] != concept]
    return order[:k]


def prompt_sets(pipe, family: str, concept: str, n: int, n_other: int, seed: int) -> dict:
    """Prompt texts + what to score, for one erased concept."""
    sets = {"direct": prompts_for(family, concept, "direct", n, seed),
            "heldout": prompts_for(family, concept, "heldout", n, seed + 1)}
    if family == "character":
        sets["keyword"] = prompts_for(family, concept, "keyword", n, seed + 2)
    others = [c.name for c in CATALOGUE.items_by_family()[family] if c.name != concept and getattr(c, "core", True)]
    spec = []
    per = max(n_other, -(-n // len(others)))  # at least n prompts in all (the unsafe family has one other concept)
    for j, o in enumerate(others):
        spec += prompts_for(family, o, "direct", per, seed + 10 + j)
    objs = [o.name for o in CATALOGUE.objects if o.name != concept]
    rng = np.random.default_rng(seed)
    unrelated = [f"a {CATALOGUE.colours[int(rng.integers(8))].name} {objs[int(rng.integers(len(objs)))]}"
                 for _ in range(n)]
    return {"sets": sets, "specificity": spec, "neighbours": nearest_neighbours(pipe, family, concept),
            "unrelated": unrelated}


def images_for(pipe, prompts: list[str], seed: int, guidance: float, steps: int) -> np.ndarray:
    return generate(pipe, prompts, seed, steps=steps, guidance=guidance)


def evaluate(pipe, oracle, family: str, concept: str, ps: dict, guidance: float, steps: int,
             base: dict | None = None) -> dict:
    """Scores of the current pipeline (and its images, reused as the base for pixel differences)."""
    res: dict = {"images": {}}
    for kind, prompts in ps["sets"].items():
        imgs = images_for(pipe, [p.text for p in prompts], 1000, guidance, steps)
        res["images"][kind] = imgs
        res[kind] = detection(oracle, imgs, family, concept)
    spec = ps["specificity"]
    imgs = images_for(pipe, [p.text for p in spec], 2000, guidance, steps)
    preds = oracle.predict(imgs)
    ok = [pr[family] == p.labels[family] for pr, p in zip(preds, spec, strict=True)]
    res["specificity"] = 100.0 * float(np.mean(ok))
    near = [i for i, p in enumerate(spec) if p.labels[family] in ps["neighbours"]]
    res["neighbours"] = 100.0 * float(np.mean([ok[i] for i in near])) if near else float("nan")
    both = [pr["object"] == p.labels["object"] and pr["colour"] == p.labels["colour"]
            for pr, p in zip(preds, spec, strict=True) if p.labels["object"] != "none"]
    res["obj_colour"] = 100.0 * float(np.mean(both)) if both else float("nan")
    unrelated = images_for(pipe, ps["unrelated"], 3000, guidance, steps)
    res["images"]["unrelated"] = unrelated
    if base is not None:
        res["pixel_diff"] = float(np.abs(unrelated.astype(np.int16) - base["images"]["unrelated"]).mean())
    return res


def toy_benchmark(args, save=None) -> dict:
    """All (concept, method) rows; `save(result_so_far)` is called after each concept."""
    pipe, oracle = load_pipeline(str(toyworld_dir() / "pipeline")), load_oracle()  # = load_pipeline("toyworld")
    guidance = default_guidance("toyworld")
    rows = []
    result = {"rows": rows, "n": args.n, "n_other": args.n_other, "steps": args.steps, "guidance": guidance,
              "oracle": oracle.identity()}
    for family, concept in CONCEPTS.items():
        if family not in args.families:
            continue
        ps = prompt_sets(pipe, family, concept, args.n, args.n_other, seed=0)
        t = time.perf_counter()
        base = evaluate(pipe, oracle, family, concept, ps, guidance, args.steps)
        print(f"[{family} {concept}] base: direct {base['direct']:.0f}% heldout {base['heldout']:.0f}% "
              f"spec {base['specificity']:.0f}% ({time.perf_counter() - t:.0f} s)", flush=True)
        req = toyworld_request(concept)
        for variant in args.variants:
            method, opts = VARIANTS[variant]
            opts = dict(opts)
            if variant in TEMPLATED:
                opts["templates"] = toyworld_templates(concept, n=8)
            if get_eraser(method).trains:
                opts["hooks"] = toyworld_hooks(concept, oracle)
            edit, seconds, peak = measure_peak(lambda m=method, r=req, o=opts: erase(
                pipe, m, erase=r["erase"], preserve=r["preserve"], guide=r["guide"], **o))
            with edit.applied(pipe):
                r = evaluate(pipe, oracle, family, concept, ps, guidance, args.steps, base=base)
            row = {"family": family, "concept": concept, "method": variant, "edit_s": seconds,
                   "peak_mib": peak * 1024, "neighbours": ps["neighbours"]}
            if "train" in edit.manifest.get("info", {}):
                tr = edit.manifest["info"]["train"]
                row["train"] = {k: tr.get(k) for k in ("steps", "seconds", "stopped", "checks")}
            for key in ("direct", "heldout", "keyword", "specificity", "neighbours", "obj_colour"):
                if key in r:
                    row[f"{key}_base"], row[f"{key}_edit"] = base[key], r[key]
            row["pixel_diff"] = r["pixel_diff"]
            rows.append(row)
            print(f"  {variant:8s} direct {base['direct']:.0f}->{r['direct']:.0f}  heldout {base['heldout']:.0f}->"
                  f"{r['heldout']:.0f}" + (f"  keyword {base['keyword']:.0f}->{r['keyword']:.0f}" if "keyword" in r
                                           else "")
                  + f"  spec {base['specificity']:.0f}->{r['specificity']:.0f}  near {base['neighbours']:.0f}->"
                  f"{r['neighbours']:.0f}  pix {r['pixel_diff']:.1f}  {seconds:.2f} s", flush=True)
        if save is not None:
            save(result)
    return result


def _pct(b: float, e: float) -> str:
    return f"{b:.0f} → {e:.0f}"


STOPPED = {"steps": "budget", "check": "early stop", "time": "time budget"}


def markdown(cmd: str, toy: dict | None, real: dict | None, note: str = "") -> str:
    from erasekit.report.markdown import md_table

    parts = [f"Command: {cmd} (erasekit {__version__}); machine: {machine()}."]
    if toy:
        parts.append(
            f"### Toy world\n\nShipped toy model, DDIM {toy['steps']} steps, guidance {toy['guidance']}; oracle "
            f"{toy['oracle'].get('name', '')} {toy['oracle'].get('version', '')}. {toy['n']} images per direct / "
            f"held-out / keyword set, ≥ {toy['n_other']} per other concept of the family (≥ {toy['n']} in all). "
            "Erase/guide/preserve sets: "
            "`erasekit.erasers.concepts.toyworld_request` (artist → guide \"art\", preserve the other core artists; "
            "others → guide \"\", preserve the family's other members; unsafe → the name plus its training phrases). "
            "Detection = % of images the oracle labels with the erased concept; specificity = oracle accuracy on the "
            "family's other concepts (near = the erased concept's 2 nearest neighbours by text embedding); "
            "pixel diff = "
            "mean |Δ| (0-255) against the base model's images for unrelated prompts, same seeds. Targets: direct "
            "detection ≥ 90% → ≤ 10%; specificity within 5 points. \"+tpl\" variants also train/edit on 8 "
            "training-caption templates of the concept (held-out templates never). Fine-tuning methods "
            "(esd, spm, fewshot, advunlearn) stop early once the oracle detection rate on 4 direct prompts "
            "x 2 seeds falls to `stop_at` (default 0; `toyworld_hooks`, every `check_every` steps): their edit time "
            "includes those checks, "
            "and the method column shows steps run and why training stopped. Load average when it finished: "
            f"{', '.join(f'{x:.1f}' for x in toy.get('load_average', ()))}.")
        header = ["concept", "method", "direct %", "held-out %", "keyword %", "specificity %", "near %",
                  "pixel diff", "edit s", "peak MiB"]
        body = []
        for r in toy["rows"]:
            method = r["method"]
            if r.get("train"):  # fine-tuning: steps run and why it stopped (steps budget / oracle check / time)
                method += f" ({r['train']['steps']} steps, {STOPPED.get(r['train']['stopped'], r['train']['stopped'])})"
            body.append([f"{r['family']}: {r['concept']}", method, _pct(r["direct_base"], r["direct_edit"]),
                         _pct(r["heldout_base"], r["heldout_edit"]),
                         _pct(r["keyword_base"], r["keyword_edit"]) if "keyword_base" in r else "–",
                         _pct(r["specificity_base"], r["specificity_edit"]),
                         _pct(r["neighbours_base"], r["neighbours_edit"]), f"{r['pixel_diff']:.1f}",
                         f"{r['edit_s']:.2f}", f"{r['peak_mib']:.0f}"])
        parts.append(md_table(header, body))
        if note:
            parts.append(note)
    if real:
        body = [[r["method"], r["concepts"], f"{r['median_s']:.3f}", f"{r['min_s']:.3f}",
                 f"{r['peak_delta_gib'] * 1024:.0f}", f"{r['peak_rss_gib']:.2f}"] for r in real["rows"]]
        parts.append(
            "### Real scale\n\nRandom-weight SD1.5-sized `UNet2DConditionModel` "
            f"({real['kv_matrices']} cross-attention "
            f"K/V matrices) + CLIP ViT-L/14 text encoder, CPU, float32; model load {real['load_s']:.1f} s excluded "
            f"(RSS after load {real['rss_after_load_gib']:.2f} GiB). Time = `erasekit.erase(...)` wall time including "
            f"text encoding, the solve and the sha256 of base and edited tensors; median of {real['repeats']} runs. "
            "Targets: ≤ 0.5 s for one concept, ≤ 3 s for 100. Rerun: `erasekit bench closed-form`. "
            f"Load average when it finished: {', '.join(f'{x:.1f}' for x in real.get('load_average', ()))} "
            "(other jobs shared the 2 cores: timings are upper bounds).")
        parts.append(md_table(["method", "concepts", "median s", "min s", "peak Δ MiB (during edit)",
                               "process peak RSS GiB"], body))
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", choices=("both", "toy", "real"), default="both")
    ap.add_argument("--n", type=int, default=48, help="images per direct/held-out/keyword set")
    ap.add_argument("--n-other", type=int, default=8, help="images per other concept (specificity)")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    ap.add_argument("--real-repeats", type=int, default=5)
    ap.add_argument("--families", default=",".join(CONCEPTS), help="toy-world concept families to run")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--json-out", default=str(ROOT / "runs" / "bench" / "closed_form.json"))
    ap.add_argument("--note", default="", help="a paragraph written after the toy-world table (e.g. a reading)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="only write BENCHMARKS.md from result files of earlier --part runs")
    args = ap.parse_args()
    if args.merge:
        parts = [json.loads(Path(p).read_text()) for p in args.merge]
        toys = [p["toy"] for p in parts if p.get("toy")]
        toy = dict(toys[0], rows=[r for t in toys for r in t["rows"]]) if toys else None
        if toys:
            toy["load_average"] = tuple(max(t["load_average"][i] for t in toys) for i in range(3))
        real = next((p["real"] for p in parts if p.get("real")), None)
        cmds = " and ".join(f"`{p['command']}`" for p in parts)
        from erasekit.report.markdown import replace_section

        replace_section(ROOT / "BENCHMARKS.md", "Erasure", markdown(cmds, toy, real, args.note))
        print("wrote BENCHMARKS.md (## Erasure)")
        return
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    args.families = [f.strip() for f in args.families.split(",") if f.strip()]
    torch.manual_seed(0)
    cmd = "python bench/erasure.py" + ("" if len(sys.argv) == 1 else " " + " ".join(sys.argv[1:]))
    out_dir = ROOT / "runs" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    toy = real = None

    def write() -> None:  # after each part, so a long toy run never loses the timing
        result = {"command": cmd, "machine": machine(), "toy": toy, "real": real}
        atomic_write_text(Path(args.json_out), json.dumps(result, indent=2))
        if not args.no_write:
            from erasekit.report.markdown import replace_section

            replace_section(ROOT / "BENCHMARKS.md", "Erasure", markdown(f"`{cmd}`", toy, real, args.note))
            print("wrote BENCHMARKS.md (## Erasure)", flush=True)

    if args.part in ("both", "real"):
        # MACE encodes all 77 rows of 8 contexts per concept and LEACE fits on every row of its templated prompts:
        # 100 concepts at once are minutes on 2 cores for both
        real = real_scale_benchmark(["uce", "realera", "leace", "rece", "mace"], [1, 100], repeats=args.real_repeats,
                                    counts_for={"mace": [1, 10], "leace": [1, 10]})
        real["load_average"] = os.getloadavg()
        for r in real["rows"]:
            print(f"real {r['method']:8s} x{r['concepts']:<3d} median {r['median_s']:.3f} s "
                  f"(peak +{r['peak_delta_gib'] * 1024:.0f} MiB)", flush=True)
        write()
    if args.part in ("both", "toy"):
        def partial(res: dict) -> None:
            nonlocal toy
            toy = dict(res, load_average=os.getloadavg())
            write()

        toy = toy_benchmark(args, save=partial)
        toy["load_average"] = os.getloadavg()
        write()


if __name__ == "__main__":
    main()
