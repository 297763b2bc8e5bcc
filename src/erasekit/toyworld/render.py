"""Deterministic renderer of the toy world: 32x32 RGB scenes of shapes, colours, artists' styles, characters and
unsafe-content analogues.

A `Scene` names what is in the picture; `render(scene)` draws it (anti-aliased by 4x supersampling) as a uint8 array
of shape (32, 32, 3). The same scene always gives the same pixels: placement jitter and overlay positions come from
`scene.seed` alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidValueError
from .catalogue import CATALOGUE, NONE, ArtistConcept, Catalogue

SIZE = 32
SS = 4  # supersampling factor
PLAIN_BACKGROUND = (190, 190, 185)

PATTERNS = ("hstripes", "vstripes", "checker", "diagonal", "dots", "rings", "vgradient", "hgradient", "quadrants",
            "grid", "waves", "split", "frame")
STROKES = ("none", "outline", "thick", "shadow")
SPRITES = ("robot", "frog", "snowman", "cat", "ghost", "bee")


@dataclass(frozen=True)
class Scene:
    """What one image shows. Exactly one of `object` / `character` is set (the subject); `colour` goes with `object`."""

    object: str = NONE
    colour: str = NONE
    artist: str = NONE
    character: str = NONE
    unsafe: str = NONE
    seed: int = 0

    def labels(self) -> dict[str, str]:
        return {"object": self.object, "colour": self.colour, "artist": self.artist, "character": self.character,
                "unsafe": self.unsafe}


def validate_scene(scene: Scene, catalogue: Catalogue = CATALOGUE) -> None:
    """Raise a clear error for unknown concept names or an impossible combination."""
    for family, value in scene.labels().items():
        if value != NONE and value not in catalogue.classes(family):
            catalogue.get(family, value)  # raises UnknownNameError with suggestions
    if (scene.object == NONE) == (scene.character == NONE):
        raise InvalidValueError(f"a scene needs exactly one subject: object={scene.object!r}, character={scene.character!r}")
    if scene.character != NONE and scene.colour != NONE:
        raise InvalidValueError(f"characters have fixed colours; got colour={scene.colour!r} for {scene.character!r}")
    if scene.object != NONE and scene.colour == NONE:
        raise InvalidValueError(f"object {scene.object!r} needs a colour")


# ----------------------------------------------------------------------------------------------------------- grids
_PIX = np.arange(SIZE, dtype=np.float32) + 0.5
_PY, _PX = np.meshgrid(_PIX, _PIX, indexing="ij")  # (32, 32) pixel centres
_SUB = (np.arange(SIZE * SS, dtype=np.float32) + 0.5) / SS
_SY, _SX = np.meshgrid(_SUB, _SUB, indexing="ij")  # (128, 128) sub-pixel centres


def _downsample(mask: np.ndarray) -> np.ndarray:
    """(128, 128) bool -> (32, 32) float coverage in [0, 1]."""
    return mask.reshape(SIZE, SS, SIZE, SS).mean(axis=(1, 3), dtype=np.float32)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of a (128, 128) mask by `radius` sub-pixels with a 3x3 cross, repeated."""
    out = mask.copy()
    for _ in range(radius):
        grown = out.copy()
        grown[1:, :] |= out[:-1, :]
        grown[:-1, :] |= out[1:, :]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


# ------------------------------------------------------------------------------------------------------ backgrounds
def pattern_field(pattern: str) -> np.ndarray:
    """(32, 32) float mix in [0, 1] between an artist's two palette colours."""
    x, y = _PX - 0.5, _PY - 0.5
    if pattern == "hstripes":
        return ((y // 4) % 2).astype(np.float32)
    if pattern == "vstripes":
        return ((x // 4) % 2).astype(np.float32)
    if pattern == "checker":
        return ((x // 8 + y // 8) % 2).astype(np.float32)
    if pattern == "diagonal":
        return (((x + y) // 5) % 2).astype(np.float32)
    if pattern == "dots":
        return (((x % 8) - 3.5) ** 2 + ((y % 8) - 3.5) ** 2 <= 5.0).astype(np.float32)
    if pattern == "rings":
        r = np.sqrt((x - 15.5) ** 2 + (y - 15.5) ** 2)
        return ((r // 4) % 2).astype(np.float32)
    if pattern == "vgradient":
        return y / (SIZE - 1)
    if pattern == "hgradient":
        return x / (SIZE - 1)
    if pattern == "quadrants":
        return ((x < 16) ^ (y < 16)).astype(np.float32)
    if pattern == "grid":
        return ((x % 8 < 2) | (y % 8 < 2)).astype(np.float32)
    if pattern == "waves":
        return (((y + 3.0 * np.sin(2 * np.pi * x / 16.0)) // 4) % 2).astype(np.float32)
    if pattern == "split":
        return (x + y < SIZE - 1).astype(np.float32)
    if pattern == "frame":
        return (np.minimum(np.minimum(x, y), np.minimum(SIZE - 1 - x, SIZE - 1 - y)) < 5).astype(np.float32)
    raise InvalidValueError(f"unknown pattern {pattern!r}; known: {', '.join(PATTERNS)}")


def background(artist: ArtistConcept | None) -> np.ndarray:
    """(32, 32, 3) float RGB background of an artist, or the plain grey of unstyled scenes."""
    if artist is None:
        return np.broadcast_to(np.array(PLAIN_BACKGROUND, np.float32), (SIZE, SIZE, 3)).copy()
    mix = pattern_field(artist.pattern)[..., None]
    a, b = (np.array(c, np.float32) for c in artist.palette)
    return a * (1 - mix) + b * mix


# ------------------------------------------------------------------------------------------------------------ shapes
def shape_mask(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of an object in normalised coordinates (u right, v down; the shape spans about [-1, 1])."""
    r2 = u * u + v * v
    if name == "circle":
        return r2 <= 1.0
    if name == "square":
        return (np.abs(u) <= 0.82) & (np.abs(v) <= 0.82)
    if name == "triangle":
        return (v <= 0.85) & (v >= -0.95) & (np.abs(u) <= (v + 0.95) / 1.75)
    if name == "cross":
        return ((np.abs(u) <= 0.34) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= 0.34) & (np.abs(u) <= 1.0))
    if name == "ring":
        return (r2 <= 1.0) & (r2 >= 0.48 ** 2)
    if name == "crescent":
        return (r2 <= 1.0) & ((u - 0.5) ** 2 + (v + 0.15) ** 2 >= 0.78 ** 2)
    if name == "hourglass":
        return (np.abs(v) <= 0.95) & (np.abs(u) <= np.abs(v) * 0.95 + 0.07)
    if name == "bar":
        return (np.abs(u) <= 1.05) & (np.abs(v) <= 0.4)
    raise InvalidValueError(f"unknown object {name!r}")


def _disk(u, v, cu, cv, r):
    return (u - cu) ** 2 + (v - cv) ** 2 <= r * r


def _rect(u, v, u0, u1, v0, v1):
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def sprite_parts(name: str, u: np.ndarray, v: np.ndarray) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    """A character as (mask, colour) layers, bottom first, in normalised coordinates."""
    if name == "robot":
        return [
            (_rect(u, v, -0.07, 0.07, -0.85, -0.4), (40, 40, 45)),
            (_disk(u, v, 0.0, -0.86, 0.18), (230, 30, 30)),
            (_rect(u, v, -0.78, 0.78, -0.45, 0.95), (150, 156, 168)),
            (_rect(u, v, -0.5, -0.18, -0.2, 0.1), (0, 230, 240)),
            (_rect(u, v, 0.18, 0.5, -0.2, 0.1), (0, 230, 240)),
            (_rect(u, v, -0.45, 0.45, 0.45, 0.62), (40, 40, 45)),
        ]
    if name == "frog":
        return [
            (((u / 1.0) ** 2 + ((v - 0.2) / 0.72) ** 2) <= 1.0, (40, 160, 60)),
            (_disk(u, v, -0.5, -0.5, 0.32), (40, 160, 60)),
            (_disk(u, v, 0.5, -0.5, 0.32), (40, 160, 60)),
            (_disk(u, v, -0.5, -0.52, 0.22), (250, 250, 250)),
            (_disk(u, v, 0.5, -0.52, 0.22), (250, 250, 250)),
            (_disk(u, v, -0.5, -0.5, 0.11), (10, 10, 10)),
            (_disk(u, v, 0.5, -0.5, 0.11), (10, 10, 10)),
            (_rect(u, v, -0.55, 0.55, 0.4, 0.55), (200, 30, 40)),
        ]
    if name == "snowman":
        return [
            (_disk(u, v, 0.0, 0.42, 0.56), (245, 245, 250)),
            (_disk(u, v, 0.0, -0.38, 0.4), (245, 245, 250)),
            (_rect(u, v, -0.32, 0.32, -1.0, -0.72), (20, 20, 20)),
            ((u >= 0.0) & (u <= 0.55) & (np.abs(v + 0.32) <= 0.12 * (1 - u / 0.55)), (255, 120, 0)),
            (_disk(u, v, -0.16, -0.48, 0.08), (20, 20, 20)),
            (_disk(u, v, 0.16, -0.48, 0.08), (20, 20, 20)),
            (_disk(u, v, 0.0, 0.25, 0.08), (20, 20, 20)),
            (_disk(u, v, 0.0, 0.55, 0.08), (20, 20, 20)),
        ]
    if name == "cat":
        ear_l = (v >= -1.0) & (v <= -0.3) & (np.abs(u + 0.5) <= (v + 1.0) * 0.45)
        ear_r = (v >= -1.0) & (v <= -0.3) & (np.abs(u - 0.5) <= (v + 1.0) * 0.45)
        return [
            (ear_l | ear_r, (240, 140, 40)),
            (_disk(u, v, 0.0, 0.15, 0.8), (240, 140, 40)),
            (_disk(u, v, -0.32, 0.0, 0.14), (30, 150, 40)),
            (_disk(u, v, 0.32, 0.0, 0.14), (30, 150, 40)),
            (_disk(u, v, 0.0, 0.3, 0.1), (250, 120, 160)),
            ((np.abs(v - 0.42) <= 0.04) & (np.abs(u) >= 0.2) & (np.abs(u) <= 0.95), (30, 20, 10)),
        ]
    if name == "ghost":
        wavy = v <= 0.75 + 0.18 * np.cos(u * np.pi * 2.5)
        return [
            ((_disk(u, v, 0.0, -0.2, 0.75) | (_rect(u, v, -0.75, 0.75, -0.2, 1.0) & wavy)), (150, 90, 225)),
            (_disk(u, v, -0.3, -0.3, 0.2), (250, 250, 250)),
            (_disk(u, v, 0.3, -0.3, 0.2), (250, 250, 250)),
            (_disk(u, v, -0.25, -0.27, 0.09), (20, 20, 60)),
            (_disk(u, v, 0.35, -0.27, 0.09), (20, 20, 60)),
        ]
    if name == "bee":
        body = ((u / 0.95) ** 2 + ((v - 0.2) / 0.62) ** 2) <= 1.0
        stripes = (np.floor((u + 1.0) / 0.32) % 2) == 1
        return [
            (_disk(u, v, -0.3, -0.55, 0.35) | _disk(u, v, 0.3, -0.55, 0.35), (215, 235, 250)),
            (body, (250, 210, 20)),
            (body & stripes, (25, 20, 10)),
            (_disk(u, v, 0.72, 0.05, 0.08), (250, 250, 250)),
        ]
    raise InvalidValueError(f"unknown sprite {name!r}; known: {', '.join(SPRITES)}")


# ---------------------------------------------------------------------------------------------------------- overlays
def _overlay_layers(kind: str, rng: np.random.Generator) -> list[tuple[np.ndarray, tuple[int, int, int]]]:
    if kind == "gore":
        mask = np.zeros(_SX.shape, bool)
        for _ in range(int(rng.integers(5, 8))):
            cx, cy = rng.uniform(3, 29), rng.uniform(3, 29)
            for _ in range(3):
                ox, oy, r = rng.normal(0, 1.2), rng.normal(0, 1.2), rng.uniform(1.3, 2.6)
                mask |= (_SX - cx - ox) ** 2 + (_SY - cy - oy) ** 2 <= r * r
            drip = rng.uniform(3, 8)
            mask |= (np.abs(_SX - cx) <= 0.7) & (_SY >= cy) & (_SY <= cy + drip)
        return [(mask, (135, 0, 5))]
    if kind == "nudity":
        cx = 16 + rng.uniform(-2, 2)
        body = ((_SX - cx) / 13.5) ** 2 + ((_SY - 25) / 7.0) ** 2 <= 1.0
        dots = ((_SX - cx + 5) ** 2 + (_SY - 24) ** 2 <= 2.2 ** 2) | ((_SX - cx - 5) ** 2 + (_SY - 24) ** 2 <= 2.2 ** 2)
        return [(body, (245, 190, 160)), (dots, (210, 95, 110))]
    raise InvalidValueError(f"unknown unsafe concept {kind!r}")


def _paint(canvas: np.ndarray, mask: np.ndarray, rgb) -> None:
    alpha = _downsample(mask)[..., None]
    canvas *= 1 - alpha
    canvas += alpha * np.array(rgb, np.float32)


# ------------------------------------------------------------------------------------------------------------ render
def render(scene: Scene, catalogue: Catalogue = CATALOGUE, noise: float = 3.0, shift: float = 2.0,
           scale: tuple[float, float] = (0.9, 1.1), rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw `scene` as a (32, 32, 3) uint8 RGB array. Deterministic in `scene` (incl. its seed), or in `rng` if given.

    Subject placement: centre jitter +-`shift` px, half size 10 * U(`scale`) px (the training renders use the
    defaults; the second judge trains on wider ones)."""
    validate_scene(scene, catalogue)
    rng = np.random.default_rng(scene.seed) if rng is None else rng
    artist = catalogue.get("artist", scene.artist) if scene.artist != NONE else None
    canvas = background(artist)

    cx, cy = 16 + rng.uniform(-shift, shift), 16 + rng.uniform(-shift, shift)
    half = 10.0 * rng.uniform(*scale)
    u, v = (_SX - cx) / half, (_SY - cy) / half
    if scene.object != NONE:
        colour = catalogue.get("colour", scene.colour).rgb
        layers = [(shape_mask(scene.object, u, v), colour)]
    else:
        layers = sprite_parts(catalogue.get("character", scene.character).sprite, u, v)
    silhouette = np.zeros(_SX.shape, bool)
    for mask, _ in layers:
        silhouette |= mask

    if artist is not None and artist.stroke != "none":
        if artist.stroke == "shadow":
            shadow = np.zeros_like(silhouette)
            shadow[8:, 8:] = silhouette[:-8, :-8]
            _paint(canvas, shadow, artist.stroke_rgb)
        else:
            width = 8 if artist.stroke == "outline" else 12  # 2 or 3 px
            _paint(canvas, _dilate(silhouette, width), artist.stroke_rgb)
    for mask, rgb in layers:
        _paint(canvas, mask, rgb)

    if scene.unsafe != NONE:
        for mask, rgb in _overlay_layers(scene.unsafe, rng):
            _paint(canvas, mask, rgb)
    if noise > 0:
        canvas += rng.normal(0.0, noise, canvas.shape).astype(np.float32)
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def render_many(scenes: list[Scene], catalogue: Catalogue = CATALOGUE) -> np.ndarray:
    """(N, 32, 32, 3) uint8 renders of `scenes`."""
    out = np.empty((len(scenes), SIZE, SIZE, 3), np.uint8)
    for i, s in enumerate(scenes):
        out[i] = render(s, catalogue)
    return out
