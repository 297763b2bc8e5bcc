"""erasekit's UCE vs vision-unlearning 1.0.0's UCE at SD1.5 size on CPU, same process, same pipeline (issue 16).

    pip install --no-deps --target /tmp/vut vision-unlearning==1.0.0      # a throwaway folder, never a dependency
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/peers/vu_uce_speed.py --vu /tmp/vut --counts 1,10 --repeats 3

vision-unlearning's `unlearner` package imports torchvision and `datasets` at module level (for its LoRA and CIFAR
code, which UCE does not use). Neither may be installed here, so this script registers empty stand-in modules under
those two names *only inside this process* before importing it. UCE's own code path never touches them.

Timed, per concept count N (erase N made-up artist names, guide "art", no preserve prompts, float32):
- **vision-unlearning:** the body of `UCE.train` from module discovery to the weight update: `_collect_text_embeddings`,
  `_collect_guide_outputs`, then `_update_weights` (deep copy of the 32 modules, float32 inverse). The pipeline is
  built once and reused; the model load and the result saving are excluded.
- **erasekit:** `erasekit.erase(pipe, "uce", ...)` on the same pipeline, the same concept names and guide. This
  includes Edit hashing and the finiteness checks.

Also reported: the median relative difference of the two edits' K/V weights (both use the concept's last token with
guide "art", lamb 0.5, erase scale 1; vision-unlearning inverts in float32 with a 1e-6 ridge, erasekit solves in
float64).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import types
from importlib.machinery import ModuleSpec

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402


# top-level packages vision-unlearning imports for code UCE never runs (LoRA, datasets, loggers)
STUBS = ("torchvision", "datasets", "peft", "wandb", "cv2", "dotenv", "gdown", "image_similarity_measures", "lpips",
         "pandas", "piq", "prettytable", "seaborn", "sklearn", "timm", "torch_fidelity", "torchmetrics", "unidecode")


class _Stub(types.ModuleType):
    """A module whose every attribute is another stub (import-time references only)."""

    def __getattr__(self, name: str):  # noqa: D105
        if name.startswith("__"):
            raise AttributeError(name)
        sub = _Stub(f"{self.__name__}.{name}")
        setattr(self, name, sub)
        return sub

    def __call__(self, *a, **k):  # decorators / base classes used at import time
        return self


class _StubFinder:
    def __init__(self, roots: tuple[str, ...]):
        self.roots = roots

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            return ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        m = _Stub(spec.name)
        m.__path__ = []  # a package, so submodules import
        return m

    def exec_module(self, module):
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vu", required=True, help="folder where vision-unlearning was pip-installed with --no-deps")
    ap.add_argument("--counts", default="1,10")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from erasekit.erasers import erase
    from erasekit.erasers.bench import concept_names, sd15_sized

    t = time.perf_counter()
    pipe = sd15_sized()
    build = time.perf_counter() - t
    # transformers decides once, at import, that torchvision is absent; its lazy submodules must be imported before
    # the stand-ins exist, or they would see a "torchvision" without a version
    import diffusers  # noqa: F401
    import transformers.models.auto.image_processing_auto  # noqa: F401
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline  # noqa: F401

    sys.meta_path.insert(0, _StubFinder(STUBS))
    sys.path.insert(0, args.vu)
    from vision_unlearning.unlearner.uce_sd_erase import UCE  # noqa: E402
    erase(pipe, "uce", erase=["warm up"])  # first-call overheads

    def encode_prompt(prompt, device, num_images_per_prompt, do_classifier_free_guidance):
        """diffusers' StableDiffusionPipeline.encode_prompt for SD1.5 (no attention mask, no CFG): (embeds, None)."""
        ids = pipe.tokenizer(prompt, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids
        return pipe.text_encoder(ids.to(device))[0], None

    pipe.encode_prompt = encode_prompt  # sd15_sized() is the pipeline's parts, not a StableDiffusionPipeline

    def vu_edit(concepts: list[str]) -> list[torch.nn.Module]:
        torch.set_grad_enabled(False)
        try:
            mods = [m for n, m in pipe.unet.named_modules()
                    if "attn2" in n and (n.endswith("to_v") or n.endswith("to_k"))]
            guides = ["art"] * len(concepts)
            embeds = UCE._collect_text_embeddings(None, pipe, concepts + ["art"], "cpu", torch.float32)
            outs = UCE._collect_guide_outputs(None, guides, embeds, mods)
            return UCE._update_weights(None, mods, embeds, outs, concepts, guides, [], 1.0, 0.1, 0.5, "cpu",
                                       torch.float32)
        finally:
            torch.set_grad_enabled(True)

    rows = []
    for n in [int(c) for c in args.counts.split(",")]:
        concepts = concept_names(n)
        times: dict[str, list[float]] = {"vision_unlearning": [], "erasekit": []}
        for _ in range(args.repeats):
            t = time.perf_counter()
            new = vu_edit(concepts)
            times["vision_unlearning"].append(time.perf_counter() - t)
            t = time.perf_counter()
            edit = erase(pipe, "uce", erase=concepts, guide="art")
            times["erasekit"].append(time.perf_counter() - t)
        names = [f"unet.{nm}.weight" for nm, m in pipe.unet.named_modules()
                 if "attn2" in nm and (nm.endswith("to_v") or nm.endswith("to_k"))]
        diff = [float((edit.tensors[k] - m.weight.detach()).norm() / edit.tensors[k].norm()) for k, m in zip(names, new)]
        med = {k: statistics.median(v) for k, v in times.items()}
        rows.append({"concepts": n, "median_s": {k: round(v, 3) for k, v in med.items()},
                     "all_s": {k: [round(x, 3) for x in v] for k, v in times.items()},
                     "ratio_vu_over_erasekit": round(med["vision_unlearning"] / med["erasekit"], 2),
                     "edit_rel_diff_median": round(statistics.median(diff), 4)})
        print(json.dumps(rows[-1]), flush=True)
    print(json.dumps({"build_s": round(build, 1), "threads": args.threads, "load": os.getloadavg()}))


if __name__ == "__main__":
    main()
