"""Where the text world's models and worlds come from: the shipped folders ("textworld", "textworld-retrained"),
any causal-LM folder, and the world a model was trained on (recorded in its erasekit_text.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ErasekitError, IntegrityError

SHIPPED = {"textworld": "base", "textworld-retrained": "retrained"}


def assets_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "assets" / "textworld"


def model_folder(name: str | Path) -> Path:
    """A shipped name or a folder path -> the folder (not checked)."""
    if str(name) in SHIPPED:
        return assets_dir() / SHIPPED[str(name)]
    return Path(name)


def load_text_model(name: str | Path) -> tuple[Any, Any, Path]:
    """(model float32 eval, tokenizer, folder) of a shipped name or a causal-LM folder."""
    from .train import load_lm

    folder = model_folder(name)
    if str(name) in SHIPPED and not (folder / "config.json").is_file():
        raise ErasekitError(f"the shipped text-world model {name!r} is missing at {folder}; train one with "
                            "`erasekit text train --out DIR` and pass --model DIR")
    model, tok = load_lm(folder)
    return model, tok, folder


def resolve_world(world_dir: str | Path | None, model: str | Path | None) -> Any:
    """The text world of `world_dir` if given, else the one recorded with `model` (a folder or shipped name), else
    the default (seed 0) world."""
    from .train import INFO_FILE
    from ..text.world import TextWorldConfig, build_world, load_world

    if world_dir is not None:
        return load_world(world_dir)
    if model is not None:
        info_path = model_folder(model) / INFO_FILE
        if info_path.is_file():
            info = json.loads(info_path.read_text())
            w = build_world(TextWorldConfig(**info.get("world_config", {})))
            want = info.get("world_sha256")
            if want and w.content_sha256() != want:
                raise IntegrityError(f"the world rebuilt for {str(model)!r} does not match the sha256 its training "
                                     "recorded (another erasekit version generated it); pass --world")
            return w
    return build_world(TextWorldConfig())
