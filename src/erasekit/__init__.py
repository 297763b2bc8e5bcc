"""erasekit: measure, erase, shield and attack concepts in text-to-image diffusion models.

Public API (everything works on standard diffusers/transformers objects):
    load_pipeline(name_or_path)    -> StableDiffusionPipeline ("toyworld" is the shipped proving-ground model)
    generate(pipe, prompts, seeds) -> (N, H, W, 3) uint8 images
    erase(pipe, method, erase=...) -> Edit (apply / revert / save)
    erasekit.toyworld                 the toy world: renderer, captions, prompts, oracle

The names are imported on first use, so `import erasekit` (and `erasekit ls`) stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {"generate": "erasekit.generation", "load_pipeline": "erasekit.models", "models": "erasekit.models",
         "erase": "erasekit.erasers"}

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'erasekit' has no attribute {name!r}")
