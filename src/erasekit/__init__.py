"""erasekit: measure, erase, shield and attack concepts in text-to-image diffusion models.

Public API (everything works on standard diffusers/transformers objects):
    load_pipeline(name_or_path)   -> StableDiffusionPipeline ("toyworld" is the shipped proving-ground model)
    generate(pipe, prompts, seeds) -> (N, H, W, 3) uint8 images
    erasekit.world                 the toy world: renderer, captions, prompts, oracle
"""

__version__ = "0.1.0"

from .generation import generate  # noqa: E402
from .models import load_pipeline, models  # noqa: E402
from .erasers import erase  # noqa: E402

__all__ = ["__version__", "erase", "generate", "load_pipeline", "models"]
