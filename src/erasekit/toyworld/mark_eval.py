"""The toy world v2's implicit mark as an evaluator ("toyworld-mark") and the training data of a toy model.

The mark (`dataset_v2.stamp_mark`) is a glyph strip stamped in the bottom-right corner of a share of the object
scenes and never named in captions (Geom-Erasing's setting: watermarks, text). Its ground truth is the template
correlation `dataset_v2.mark_score` >= `MARK_THRESHOLD`; this evaluator is that detector behind the core's
`erasekit.evaluators.Evaluator` protocol (family "mark", labels "mark" / "none"), plus `boxes`: where the mark is, as
a detector would report it (Geom-Erasing turns it into geometric tokens). The strip is always stamped at the same place,
so a present mark's box is that place.

`captioned_training_images` rebuilds a toy model's training set from its manifest (the World's `captioned_images`).
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

import numpy as np

from ..errors import InvalidValueError, UnknownNameError
from ..evaluators import NONE, Evaluator, _check_images
from .dataset_v2 import MARK_GLYPHS, MARK_COL, MARK_ROW, MARK_THRESHOLD, mark_score, stamp_mark
from .render import SIZE

FAMILY = "mark"
ALIASES = ("mark", "implicit mark", "watermark", "glyph strip")  # the names `target` accepts (case-insensitive)
# the stamped band (glyphs + its 1-px light border) in pixels: rows [r0, r1), columns [c0, c1)
BAND = (MARK_ROW - 1, MARK_ROW + MARK_GLYPHS.shape[0] + 1, MARK_COL - 1, MARK_COL + MARK_GLYPHS.shape[1] + 1)


def mark_box() -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) of the stamped band as fractions of the image side (x: columns, y: rows)."""
    r0, r1, c0, c1 = BAND
    return c0 / SIZE, r0 / SIZE, c1 / SIZE, r1 / SIZE


class MarkEvaluator(Evaluator):
    """Detector of the toy world's implicit mark: present iff `mark_score` >= `threshold`."""

    name = "toyworld-mark"

    def __init__(self, threshold: float = MARK_THRESHOLD):
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not -1.0 < threshold < 1.0:
            raise InvalidValueError(f"toyworld-mark threshold must be a correlation in (-1, 1), got {threshold!r}")
        self.threshold = float(threshold)

    def scores(self, images: np.ndarray) -> np.ndarray:
        """(N,) template correlation of the mark region, in [-1, 1]."""
        images = _check_images(images)
        if images.shape[1:3] != (SIZE, SIZE):
            raise InvalidValueError(f"toyworld-mark reads {SIZE}x{SIZE} toy images, got {images.shape[1:3]}")
        return mark_score(images)

    def present(self, images: np.ndarray) -> np.ndarray:
        """(N,) bool."""
        return self.scores(images) >= self.threshold

    def predict(self, images: np.ndarray) -> list[dict[str, str]]:
        return [{FAMILY: FAMILY if p else NONE} for p in self.present(images)]

    def target(self, concept: str) -> tuple[str, str]:
        if not isinstance(concept, str) or concept.strip().lower() not in ALIASES:
            raise UnknownNameError("toyworld-mark concept", str(concept), ALIASES)
        return FAMILY, FAMILY

    def boxes(self, images: np.ndarray) -> np.ndarray:
        """(N, 4) float (x0, y0, x1, y1) fractions of the image side of each present mark; NaN rows where absent."""
        present = self.present(images)
        out = np.full((len(present), 4), np.nan)
        out[present] = mark_box()
        return out

    def identity(self) -> dict:
        template = stamp_mark(np.zeros((SIZE, SIZE, 3), np.uint8))
        return {"name": self.name, "threshold": self.threshold, "family": FAMILY,
                "template_sha256": hashlib.sha256(template.tobytes()).hexdigest(), "box": list(mark_box()),
                "rule": "mark iff the Pearson correlation of the grey bottom-right band with the stamped template "
                        ">= threshold (dataset_v2.mark_score, the ground truth of the implicit concept)"}


# ------------------------------------------------------------------------------------------------ training data
@functools.lru_cache(maxsize=2)
def _dataset(key: str):
    cfg = json.loads(key)
    counts = dict(cfg.get("counts") or []) or None
    if (cfg.get("grammar") or "v1") != "v1" or cfg.get("mark_share") or cfg.get("memorized") or \
            cfg.get("nameless_artist"):  # as train.TrainConfig.uses_v2_dataset (older manifests lack these keys)
        from .dataset_v2 import WorldV2Options, build_dataset_v2

        options = WorldV2Options(rich_captions=cfg.get("grammar") == "v2", mark_share=float(cfg.get("mark_share") or 0),
                                 memorized=tuple(cfg.get("memorized") or ()),
                                 nameless_artist=cfg.get("nameless_artist") or "")
        return build_dataset_v2(int(cfg["seed"]), float(cfg["scale"]), options, counts=counts)
    from .dataset import build_dataset

    return build_dataset(int(cfg["seed"]), float(cfg["scale"]), counts=counts)


def captioned_training_images(manifest: dict | None, n: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """`n` images (n, 32, 32, 3) uint8 of the training set described by a toy model's manifest, with their captions
    (a seeded draw without replacement; the dataset is rebuilt deterministically once per process, ~10-30 s)."""
    if manifest is None or "config" not in manifest:
        raise InvalidValueError("this toy model has no manifest.json with its training config (load it from its "
                                "training folder), so its training set is unknown; pass data=FILE.npz")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidValueError(f"n must be an integer >= 1, got {n!r}")
    ds = training_dataset(manifest)
    pick = np.sort(np.random.default_rng([int(seed), 1818]).choice(len(ds), size=min(n, len(ds)), replace=False))
    return ds.images[pick], [ds.captions[i] for i in pick]


def training_dataset(manifest: dict) -> Any:
    """The training set a toy model's manifest describes (its config's seed, scale, counts and v2 options), rebuilt
    deterministically; cached per process."""
    keys = ("seed", "scale", "counts", "grammar", "mark_share", "memorized", "nameless_artist")
    return _dataset(json.dumps({k: manifest["config"].get(k) for k in keys}, sort_keys=True))


def training_share(manifest: dict | None) -> float:
    """The mark share a toy model was trained with (0 when none), from its manifest."""
    return float(((manifest or {}).get("config") or {}).get("mark_share") or 0.0)


__all__ = ["ALIASES", "BAND", "FAMILY", "MarkEvaluator", "captioned_training_images", "mark_box", "training_dataset", "training_share"]
