"""Geom-Erasing on toy world v2's implicit mark (issue 18), measured with independent samples and a control.

    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/run.py --out runs/geom18 --parts data,base
    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/run.py --out runs/geom18 --parts edit:geom
    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/run.py --out runs/geom18 --parts edit:control
    OMP_NUM_THREADS=1 .venv/bin/python bench/geom/run.py --out runs/geom18 --parts gen:geom,gen:geom+neg,gen:control

Session 8: `--set NAME=VALUE` (repeatable) passes extra eraser options to every edit part, e.g. the binding options
`token_position=before kv_lr=1e-3 box_loss_weight=4 text_encoder_lr=7.5e-5 tagged_dropout=0` (bench/geom/persist_s8.sh);
an edit already saved in --out under the part's tag (e.g. by bind_probe.py) is reused as it is.

Training an edit checkpoints every 25 steps to --out/ckpt: under load, wrap the command in `timeout 700` and rerun
it until the edit is saved (the time recorded is the training loop's own, summed over the resumed pieces).

Parts (each merges into --out/results.json; edits and data are saved in --out and reused):
  data          n training pairs of the model's own training set (rebuilt from its manifest) -> --out/data.npz, so
                every edit trains on the same pairs without rebuilding the dataset (~150 s)
  base          the base model, and the base model with the text negative "mark, watermark, text, logo"
  edit:geom     Geom-Erasing with the eraser's defaults (detector toyworld-mark, 300 steps, esd-all, batch 8,
                concept_share 0.5, caption dropout 0.1) on data.npz; --steps etc. override
  edit:control* (any tag starting with "control") the same fine-tuning (same data, seed, batches, over-sampling of the detected images, dropout) with
                geometric_tokens=false: plain captions only
  gen:geom | gen:geom+neg | gen:control | gen:control+neg   generate with the edit applied, without / with the
                geometric negative prompt (cells=learned)
  persist:base | persist:geom | persist:geom+neg | persist:control   mark persistence under img2img (see persist())
Every image has its own seed (seed = 1000 + row), so the samples are independent (the earlier bench reused seeds 0/1
for every prompt, i.e. the same initial noise); every cell sees the same (prompt, seed) rows, so cells are paired.
Each generation cell records per-image mark scores, the mark rate with its binomial standard error, the mean score,
and the robust oracle's object / colour / artist accuracy.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

OBJECTS = ("circle", "square", "triangle", "cross", "ring", "crescent", "hourglass", "bar")
TEXT_NEGATIVE = "mark, watermark, text, logo"
FAMILIES = ("object", "colour", "artist")


def extra_options(pairs: list[str]) -> dict:
    """{"name": value} from ["name=value", ...], values cast to int / float / bool where they parse."""
    out = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        value: object = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                pass
        out[name] = {"true": True, "false": False}.get(raw.lower(), value)
    return out


class Bench:
    def __init__(self, args: argparse.Namespace):
        from erasekit import load_pipeline
        from erasekit.evaluators import get_evaluator
        from erasekit.worlds import world_of_model

        self.args, self.out = args, Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.pipe = load_pipeline(args.model)
        self.world = world_of_model(self.pipe)
        self.mark, self.oracle = get_evaluator("toyworld-mark"), get_evaluator("toyworld-oracle-v2")
        prompts = [p for o in OBJECTS for p in self.world.prompts(o, "direct", args.prompts, 0)]
        self.rows = [(p, 1000 + i) for i, p in enumerate(q for q in prompts for _ in range(args.reps))]
        self.path = self.out / "results.json"
        self.results = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.results.setdefault("cells", {})
        self.results.setdefault("edits", {})
        self.results.update(model=args.model, images_per_cell=len(self.rows), prompts=len(prompts), reps=args.reps)

    def save(self) -> None:
        self.path.write_text(json.dumps(self.results, indent=1))

    # ------------------------------------------------------------------------------------------------ parts
    def data(self) -> None:
        path = self.out / "data.npz"
        if path.exists():
            return
        t, c = time.perf_counter(), time.process_time()
        images, captions = self.world.captioned_images(self.pipe, self.args.n_images, self.args.seed)
        np.savez(path, images=images, captions=np.array(captions))
        flags = self.mark.shows(images, "mark")
        self.results["data"] = {"n": len(images), "marked": int(flags.sum()), "share": round(float(flags.mean()), 4),
                                "wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - c, 1)}
        print("data", self.results["data"], flush=True)

    def edit(self, tag: str):
        from erasekit.edits import Edit
        from erasekit.erasers import erase
        from erasekit.erasers.geom_erasing import GeomHooks

        path = self.out / f"{tag}.safetensors"
        if path.exists():
            return Edit.load(path, pipe=self.pipe)
        a = self.args
        data = "" if a.world_data else str(self.out / "data.npz")
        options = dict(detector="toyworld-mark", data=data, steps=a.steps,
                       n_images=a.n_images, train_method=a.train_method, seed=a.seed,
                       concept_share=a.concept_share, caption_dropout=a.caption_dropout,
                       geometric_tokens=not tag.startswith("control"))
        options.update(extra_options(a.set))  # session 8: binding options (token_position, kv_lr, ...)
        options["checkpoint_every"] = a.checkpoint_every
        t, c = time.perf_counter(), time.process_time()
        edit = erase(self.pipe, "geom_erasing", erase=["mark"],
                     hooks=GeomHooks(checkpoint_dir=str(self.out / "ckpt"), progress=False), **options)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        edit.save(path)
        info = edit.manifest["info"]
        losses = info["train"]["losses"]
        self.results["edits"][tag] = {
            "options": options, "erase_wall_s": round(wall, 1), "erase_cpu_s": round(cpu, 1),
            "train_s": info["train"]["seconds"], "steps": info["train"]["steps"],
            "resumed_from": info["train"]["resumed_from"],
            "unet_parameters_changed": edit.num_parameters(), "tensors": len(edit.names),
            "token_floats_trained": len(info["geom"]["vectors"]) * info["geom"]["dim"] if options["geometric_tokens"]
            else 0,
            "data": info["data"], "negative_prompt": info["geom"]["negative_prompt"],
            "loss_first20_mean": round(float(np.mean(losses[:20])), 4),
            "loss_last20_mean": round(float(np.mean(losses[-20:])), 4)}
        print(tag, self.results["edits"][tag], flush=True)
        return edit

    def gen(self, name: str, shield=None, guidance: float | None = None) -> None:
        from erasekit.shields import shielded_generate

        g = guidance
        t, c = time.perf_counter(), time.process_time()
        images, _ = shielded_generate(self.pipe, [p.text for p, _ in self.rows], [s for _, s in self.rows],
                                      shields=shield, guidance=g)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        scores = self.mark.scores(images)
        flags = scores >= self.mark.threshold
        preds = self.oracle.predict(images)
        acc = {f: round(float(np.mean([pr[f] == p.labels[f] for pr, (p, _) in zip(preds, self.rows)])), 3)
               for f in FAMILIES}
        n, k = len(flags), int(flags.sum())
        per_object = {o: int(sum(fl for fl, (p, _) in zip(flags, self.rows) if p.labels["object"] == o))
                      for o in OBJECTS}
        key = f"{name} @ g={g:g}"
        self.results["cells"][key] = {
            "n": n, "marked": k, "mark_rate": round(k / n, 4), "se": round(math.sqrt(k / n * (1 - k / n) / n), 4),
            "mean_score": round(float(scores.mean()), 4), "se_score": round(float(scores.std(ddof=1) / math.sqrt(n)), 4),
            "accuracy": acc, "per_object_marked": per_object, "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
            "scores": [round(float(s), 3) for s in scores]}
        print(key, {k2: v for k2, v in self.results["cells"][key].items() if k2 != "scores"}, flush=True)
        self.save()

    def persist(self, name: str, tokens=None, guidance: float = 5.0) -> None:
        """Mark persistence (img2img): training images of data.npz (48 detected as marked, --persist-unmarked not), noised to
        `--strengths` of the 25-step DDIM schedule and denoised with their own (plain) caption under CFG (negative
        = "" or, with `tokens`, the geometric negative). The rate at which the mark survives on marked inputs is a
        paired, far more sensitive read of "plain captions still produce the mark" than the ~3% spontaneous rate;
        the rate on unmarked inputs is the spontaneous one; object accuracy of the oracle on the outputs is
        specificity."""
        import copy

        from erasekit.erasers.fewshot import encode_latents
        from erasekit.erasers.geom_erasing import encode_with_tokens
        from erasekit.sampling import decode, encode_prompts

        z = np.load(self.out / "data.npz")
        images, captions = z["images"], [str(c) for c in z["captions"]]
        flags = self.mark.shows(images, "mark")
        idx = np.concatenate([np.flatnonzero(flags)[:48], np.flatnonzero(~flags)[:self.args.persist_unmarked]])
        marked_in = flags[idx]
        caps = [captions[i] for i in idx]
        t, c = time.perf_counter(), time.process_time()
        out: dict = {"inputs_marked": int(marked_in.sum()), "inputs_unmarked": int((~marked_in).sum())}
        with torch.no_grad():
            lat = encode_latents(self.pipe, images[idx], torch.Generator().manual_seed(11), flip=False)
            cond = encode_prompts(self.pipe, caps)
            unc = encode_prompts(self.pipe, [""] * len(idx)) if tokens is None else \
                encode_with_tokens(self.pipe, [""] * len(idx), [tokens.rows()] * len(idx), tokens.vectors,
                                   tokens.position)
            for strength in [float(x) for x in self.args.strengths.split(",")]:
                sched = copy.deepcopy(self.pipe.scheduler)
                sched.set_timesteps(25)
                ts = sched.timesteps[25 - round(25 * strength):]
                noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(12))
                x = sched.add_noise(lat, noise, ts[:1].repeat(len(lat)))
                for tt in ts:
                    e = self.pipe.unet(torch.cat([x, x]), tt, encoder_hidden_states=torch.cat([unc, cond])).sample
                    eu, ec = e.chunk(2)
                    x = sched.step(eu + guidance * (ec - eu), tt, x).prev_sample
                res = decode(self.pipe, x)
                kept = self.mark.shows(res, "mark")
                objs = [p["object"] for p in self.oracle.predict(res)]
                src = [p["object"] for p in self.oracle.predict(images[idx])]
                km, n_m = int(kept[marked_in].sum()), int(marked_in.sum())
                ku, n_u = int(kept[~marked_in].sum()), max(int((~marked_in).sum()), 1)
                out[f"strength {strength:g}"] = {
                    "persistence": round(km / n_m, 4), "persisted": km,
                    "se": round(math.sqrt(km / n_m * (1 - km / n_m) / n_m), 4),
                    "spontaneous": round(ku / n_u, 4), "spontaneous_n": ku,
                    "object_agreement_with_input": round(float(np.mean([a == b for a, b in zip(objs, src)])), 3),
                    "kept": [int(k) for k in kept]}
                print(name, strength, {k: v for k, v in out[f"strength {strength:g}"].items() if k != "kept"},
                      flush=True)
        out.update(wall_s=round(time.perf_counter() - t, 1), cpu_s=round(time.process_time() - c, 1))
        self.results.setdefault("persistence", {})[f"{name} @ g={guidance:g}"] = out
        self.save()

    def run(self, part: str) -> None:
        from erasekit.shields import get_shield
        from erasekit.shields.negative_prompt import NegativePrompt, NegativePromptConfig

        guidances = [float(x) for x in self.args.guidances.split(",")]
        if part == "data":
            self.data()
        elif part == "base":
            for g in guidances:
                self.gen("base", guidance=g)
        elif part == "base+text":
            for g in guidances:
                self.gen("base + text negative", NegativePrompt(NegativePromptConfig(text=TEXT_NEGATIVE)), g)
        elif part.startswith("edit:"):
            self.edit(part[5:])
        elif part.startswith("persist:"):
            from erasekit.erasers.geom_erasing import GeomTokenSet

            tag, neg = part[8:].partition("+")[::2]
            if tag == "base":
                self.persist("base")
            else:
                edit = self.edit(tag)
                with edit.applied(self.pipe):
                    self.persist(f"{tag} edit" + (" + geometric negative" if neg else ""),
                                 GeomTokenSet.from_edit(edit) if neg else None)
        elif part.startswith("gen:"):
            tag, neg = part[4:].partition("+")[::2]
            edit = self.edit(tag)
            with edit.applied(self.pipe):
                for g in guidances:
                    shield = get_shield("geom_negative:cells=learned", edit=edit) if neg else None
                    self.gen(f"{tag} edit" + (" + geometric negative" if neg else ""), shield, g)
        else:
            raise SystemExit(f"unknown part {part!r}")
        self.save()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="toyworld-v2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--parts", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--prompts", type=int, default=6, help="direct prompts per object")
    ap.add_argument("--reps", type=int, default=2, help="images per prompt (each with its own seed)")
    ap.add_argument("--guidances", default="3", help="comma-separated guidance scales of the generation cells")
    ap.add_argument("--persist-unmarked", type=int, default=0, help="persist parts: unmarked inputs too (<= 48)")
    ap.add_argument("--strengths", default="0.4,0.6", help="persist parts: img2img strengths (share of 25 steps)")
    ap.add_argument("--n-images", type=int, default=1024)
    ap.add_argument("--train-method", default="esd-all")
    ap.add_argument("--concept-share", type=float, default=0.5)
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--world-data", action="store_true",
                    help="edits draw --n-images pairs from the model's world (as the session-6 edit did) instead of "
                         "data.npz")
    ap.add_argument("--set", action="append", default=[],
                    help="extra eraser option NAME=VALUE for edit parts (repeatable), e.g. token_position=before")
    ap.add_argument("--checkpoint-every", type=int, default=25,
                    help="edits checkpoint to --out/ckpt; a killed run (e.g. by `timeout`) resumes there when rerun")
    args = ap.parse_args()
    torch.set_num_threads(1)
    bench = Bench(args)
    for part in [p for p in args.parts.split(",") if p]:
        bench.run(part)


if __name__ == "__main__":
    main()
