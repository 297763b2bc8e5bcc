"""`load_pipeline`: the shipped toy model, a local diffusers folder, or a hub id -> a standard `StableDiffusionPipeline`.

Every entry point of erasekit works on the object returned here; nothing is toy-specific beyond the weights.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from diffusers.utils import logging as dlogging
from transformers.utils import logging as tlogging

from .errors import ErasekitError, UnknownNameError, first_line
from .registry import Registry
from .tokenizer import clip_tokenizer



@dataclass(frozen=True)
class ModelSource:
    """Where a registered model lives: a folder inside the package, a local folder, or a hub id."""

    package_path: str = ""  # relative to the erasekit package, e.g. "assets/toyworld/pipeline"
    location: str = ""  # a local folder or a hub id

    def resolve(self) -> str:
        if self.package_path:
            return str(resources.files("erasekit").joinpath(self.package_path))
        return self.location


models: Registry[ModelSource] = Registry("model")
models.add("toyworld", ModelSource(package_path="assets/toyworld/pipeline"),
           help="the shipped 32x32 toy-world Stable Diffusion (trained from scratch)")
models.add("toyworld-v2", ModelSource(package_path="assets/toyworld_v2/pipeline"),
           help="toy world v2: trained on the rich caption grammar, with the implicit mark, memorized pairs "
                "(1/10/100/1000 copies) and a style only images evoke (its manifest says how)")


CARD = "erasekit.json"  # a model folder's own defaults: {"world": ..., "sampling": {"steps": ..., "guidance": ...}}


def model_folder(model: object) -> Path | None:
    """The local folder of a registered name, a folder path or a loaded pipeline (its `name_or_path`), else None."""
    where = getattr(model, "name_or_path", model)
    if not isinstance(where, (str, Path)) or not str(where):
        return None
    if isinstance(where, str) and where in models:
        where = models.get(where).resolve()
    path = Path(where).expanduser()
    return path if path.is_dir() else None


def model_card(model: object) -> dict:
    """The model folder's erasekit.json ({} when there is none, or for a hub id / in-memory pipeline without one).

    Keys read by the core: "world" (a registered world name), "sampling" ({"steps", "guidance"}: the settings the
    model is evaluated with). A malformed card raises naming the file."""
    folder = model_folder(model)
    if folder is None or not (folder / CARD).is_file():
        return {}
    path = folder / CARD
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ErasekitError(f"{path}: not a readable JSON model card ({e}); fix or delete it") from e
    if not isinstance(card, dict):
        raise ErasekitError(f"{path}: a model card is a JSON object, got {type(card).__name__}")
    return card


def _resolve(name_or_path: str) -> tuple[str, Path | str]:
    if name_or_path in models:
        return _resolve(models.get(name_or_path).resolve())
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not (path / "model_index.json").exists():
            raise ErasekitError(f"{str(path)!r} is not a diffusers pipeline folder (no model_index.json inside)")
        return "local", path
    if name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/", "~")):
        return "hub", name_or_path
    raise UnknownNameError("model", name_or_path, models.names())


@contextlib.contextmanager
def _quiet_loading():
    """Silence diffusers' and transformers' loading bars for the duration, restoring their previous state."""
    was = [(lib, lib.is_progress_bar_enabled()) for lib in (dlogging, tlogging)]
    for lib, _ in was:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib, on in was:
            if on:
                lib.enable_progress_bar()


def load_pipeline(name_or_path: str = "toyworld", dtype: torch.dtype = torch.float32,
                  device: str | torch.device = "cpu") -> StableDiffusionPipeline:
    """Load a Stable Diffusion 1.x-style pipeline.

    `name_or_path`: a registered name (`erasekit ls models`; "toyworld" is the shipped model), a local diffusers folder,
    or a hub id such as "CompVis/stable-diffusion-v1-4" (needs hub access or a local cache). The safety checker is
    dropped (erasekit evaluates safety itself); a folder without a tokenizer gets the offline CLIP tokenizer.
    """
    kind, where = _resolve(name_or_path)
    kwargs = dict(dtype=dtype, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if kind == "local" and not (Path(where) / "tokenizer").exists():
        kwargs["tokenizer"] = clip_tokenizer()
    try:
        with _quiet_loading():
            pipe = StableDiffusionPipeline.from_pretrained(str(where), **kwargs)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        if kind == "hub":
            raise ErasekitError(f"could not load {name_or_path!r} from the hub or its cache ({e}); pass a local "
                                f"diffusers folder instead, or one of: {', '.join(models.names())}") from e
        raise ErasekitError(f"{str(where)!r} is not a loadable SD1.x diffusers folder ({type(e).__name__}: "
                            f"{first_line(e, 200)}); "
                            "it needs model_index.json and unet/, text_encoder/, vae/, scheduler/ folders with "
                            "config files and .safetensors weights") from e
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
