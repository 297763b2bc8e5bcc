"""Geom-Erasing on toy world v2's implicit mark (issue 18): mark rate on object prompts before/after, collateral on
object/colour/artist detection by the robust oracle, time and parameters changed.

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/geom_erasing.py --model /work/runs/train-v2g/pipeline \
        --out /work/runs/geom-bench [--parts base,geom,control] [--steps 300] [--seeds 2] [--prompts 4]

Parts (results merged into --out/results.json; edits saved in --out and reused when present):
  base     the base model; the base model with the text negative "mark, watermark, text, logo" (the implicit concept
           has no name, so text should not reach it)
  geom     Geom-Erasing (detector toyworld-mark, data: the model's own training set rebuilt from its manifest): the
           edit alone (fine-tuning on re-captioned data), edit + geometric negative prompt (cells learned / all /
           none), edit + the text negative
  control  the same fine-tuning with a shuffled detector (as many images tagged, chosen at random, so the tokens are
           unrelated to the mark): separates the tokens' effect from fine-tuning on the data itself
Prints a markdown table of every variant measured so far.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

OBJECTS = ("circle", "square", "triangle", "cross", "ring", "crescent", "hourglass", "bar")
TEXT_NEGATIVE = "mark, watermark, text, logo"
FAMILIES = ("object", "colour", "artist")
PARTS = ("base", "geom", "control")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a rate k / n."""
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return round(c - h, 3), round(c + h, 3)


class Bench:
    def __init__(self, args: argparse.Namespace):
        from erasekit import load_pipeline
        from erasekit.evaluators import get_evaluator
        from erasekit.shields.negative_prompt import NegativePrompt, NegativePromptConfig
        from erasekit.worlds import get_world, world_of_model

        self.args, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.pipe = load_pipeline(args.model)
        world = world_of_model(self.pipe)
        self.world = world if world.name != "none" else get_world("toyworld")
        self.mark, self.oracle = get_evaluator("toyworld-mark"), get_evaluator("toyworld-oracle-v2")
        prompts = [p for o in OBJECTS for p in self.world.prompts(o, "direct", args.prompts, 0)]
        self.rows = [(p, s) for p in prompts for s in range(args.seeds)]
        path = self.out / "results.json"
        old = json.loads(path.read_text()) if path.exists() else {}
        self.results = {**old, "model": args.model, "images_per_variant": len(self.rows), "prompts": len(prompts),
                        "seeds": args.seeds, "variants": old.get("variants", {})}
        self.text_negative = NegativePrompt(NegativePromptConfig(text=TEXT_NEGATIVE))

    def gen(self, name: str, shield=None) -> None:
        """Generate every (prompt, seed) through `shield`; record mark rate and the oracle's accuracy."""
        from erasekit.shields import shielded_generate

        t = time.perf_counter()
        images, _ = shielded_generate(self.pipe, [p.text for p, _ in self.rows], [s for _, s in self.rows],
                                      shields=shield)
        seconds = time.perf_counter() - t
        flags = self.mark.shows(images, "mark")
        preds = self.oracle.predict(images)
        acc = {f: round(float(np.mean([pr[f] == p.labels[f] for pr, (p, _) in zip(preds, self.rows)])), 3)
               for f in FAMILIES}
        k = int(flags.sum())
        self.results["variants"][name] = {
            "mark_rate": round(k / len(flags), 3), "marked": k, "ci95": wilson(k, len(flags)),
            "median_mark_score": round(float(np.median(self.mark.scores(images))), 3), "accuracy": acc,
            "generate_s": round(seconds, 1)}
        print(name, self.results["variants"][name], flush=True)

    def edit(self, tag: str, hooks, detector: str = ""):
        """The Geom-Erasing edit `tag` (loaded from --out when present)."""
        from erasekit.edits import Edit
        from erasekit.erasers import erase

        path = self.out / f"{tag}.safetensors"
        if path.exists():
            return Edit.load(path, pipe=self.pipe)
        t = time.perf_counter()
        a = self.args
        edit = erase(self.pipe, "geom_erasing", erase=["mark"], hooks=hooks, detector=detector, steps=a.steps,
                     n_images=a.n_images, train_method=a.train_method, lr=a.lr, seed=a.seed)
        edit.manifest["bench_erase_s"] = round(time.perf_counter() - t, 1)  # data build + detection + training
        edit.save(path)
        return edit

    def describe(self, tag: str, edit) -> None:
        info = edit.manifest["info"]
        self.results[tag] = {
            "erase_s_total": edit.manifest.get("bench_erase_s"), "train_s": info["train"]["seconds"],
            "unet_parameters_changed": edit.num_parameters(),
            "token_floats": len(info["geom"]["vectors"]) * info["geom"]["dim"], "tensors": len(edit.names),
            "data": info["data"], "negative_prompt": info["geom"]["negative_prompt"],
            "first_loss": info["train"]["losses"][0], "final_loss": info["train"]["final_loss"],
            "steps": info["train"]["steps"], "config": edit.manifest["config"]}
        print(tag, {k: v for k, v in self.results[tag].items() if k != "config"}, flush=True)

    # ------------------------------------------------------------------------------------------------ parts
    def base(self) -> None:
        self.gen("base")
        self.gen("base + text negative", self.text_negative)

    def geom(self) -> None:
        from erasekit.erasers.geom_erasing import GeomHooks
        from erasekit.shields import get_shield

        edit = self.edit("geom", GeomHooks(), detector="toyworld-mark")
        self.describe("edit", edit)
        wanted = self.args.geom_variants.split(",")
        with edit.applied(self.pipe):
            if "plain" in wanted:
                self.gen("geom edit, no negative")
            for cells in ("learned", "all", "none"):
                if cells in wanted:
                    self.gen(f"geom edit + geom negative ({cells})",
                             get_shield(f"geom_negative:cells={cells}", edit=edit))
            if "text" in wanted:
                self.gen("geom edit + text negative", self.text_negative)

    def control(self) -> None:
        from erasekit.erasers.geom_erasing import GeomHooks
        from erasekit.shields import get_shield
        from erasekit.toyworld.mark_eval import mark_box

        images, captions = self.world.captioned_images(self.pipe, self.args.n_images, self.args.seed)
        truth = self.mark.shows(images, "mark")
        keys = [hashlib.sha256(im.tobytes()).hexdigest() for im in images]
        distinct = list(dict.fromkeys(keys))
        rng = np.random.default_rng(7)
        tagged = set(rng.choice(len(distinct), int(truth.sum()), replace=False).tolist())
        lookup = {k: i in tagged for i, k in enumerate(distinct)}

        class Shuffled:
            """Tags about as many images as the real detector, at random: tokens unrelated to the mark."""

            def __call__(self, ims: np.ndarray) -> np.ndarray:
                return np.array([lookup[hashlib.sha256(im.tobytes()).hexdigest()] for im in ims])

            def boxes(self, ims: np.ndarray) -> np.ndarray:
                return np.tile([mark_box()], (len(ims), 1))

        fake = Shuffled()(images)
        edit = self.edit("control-shuffled", GeomHooks(detector=Shuffled(), images=images, captions=captions))
        self.describe("control_edit", edit)
        self.results["control_edit"]["tagged"] = int(fake.sum())
        self.results["control_edit"]["tagged_and_marked"] = int((fake & truth).sum())
        with edit.applied(self.pipe):
            self.gen("control (shuffled detector), no negative")
            self.gen("control (shuffled detector) + geom negative", get_shield("geom_negative", edit=edit))

    def save(self) -> None:
        (self.out / "results.json").write_text(json.dumps(self.results, indent=1))
        print("\n| variant | mark rate (95% CI) | object acc | colour acc | artist acc | generate s |")
        print("|---|---|---|---|---|---|")
        for name, v in self.results["variants"].items():
            a = v["accuracy"]
            print(f"| {name} | {v['mark_rate']:.3f} ({v['ci95'][0]:.3f}-{v['ci95'][1]:.3f}) | {a['object']:.3f} | "
                  f"{a['colour']:.3f} | {a['artist']:.3f} | {v['generate_s']} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", default="base,geom", help="comma-separated: " + ", ".join(PARTS))
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=4, help="direct prompts per object")
    ap.add_argument("--n-images", type=int, default=1024)
    ap.add_argument("--train-method", default="esd-all")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--geom-variants", default="plain,learned,all,none,text",
                    help="geom part: plain (edit alone), learned/all/none (geometric negative cells), text")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise SystemExit(f"--parts: unknown {bad}; use {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    try:
        for p in parts:
            getattr(bench, p)()
    finally:
        bench.save()


if __name__ == "__main__":
    main()
