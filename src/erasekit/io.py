"""Atomic file writes: write to a temporary file in the same folder, then rename. Nothing is ever half-written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint written by `torch.save`, loaded with `weights_only=True`: tensors, numbers, strings and
    containers only, so a crafted file cannot run code. Anything else (a pickle with code, a corrupt file) raises
    one line naming the file and the fix."""
    import pickle

    import torch

    from .errors import ErasekitError

    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ErasekitError(f"refusing checkpoint {path}: it is not a plain tensor checkpoint ({first[:160]}); "
                            "delete it to start that stage over") from e
    if not isinstance(state, dict):
        raise ErasekitError(f"refusing checkpoint {path}: expected a mapping, got {type(state).__name__}; delete it")
    return state


def slug(text: str) -> str:
    """A folder-safe lower-case name: every character that is not a letter or digit becomes '-'."""
    return "".join(ch if ch.isalnum() else "-" for ch in text.lower()).strip("-")
