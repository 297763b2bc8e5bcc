"""The proving ground: a procedurally rendered world with ground truth, a tiny SD trained on it, and its oracle.

    from erasekit.toyworld import CATALOGUE, Scene, render, prompts_for, load_oracle
"""

from __future__ import annotations

from .captions import Prompt, caption, prompts_for
from .catalogue import CATALOGUE, FAMILIES, NONE, Catalogue
from .render import Scene, render, render_many


def load_oracle(directory=None):
    """The shipped toy-world oracle (`ToyOracle`): `.predict(images)`, `.probs`, `.embed`, `.identity()`."""
    from .plugin import load_oracle as _load

    return _load(directory)


__all__ = ["CATALOGUE", "FAMILIES", "NONE", "Catalogue", "Prompt", "Scene", "caption", "load_oracle", "prompts_for",
           "render", "render_many"]
