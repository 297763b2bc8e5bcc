"""PNG helpers: grids of uint8 images, data URIs for self-contained HTML."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import InvalidValueError
from ..io import atomic_write_bytes


def png_bytes(image: np.ndarray | Image.Image, scale: int = 1) -> bytes:
    """PNG-encode an (H, W, 3) uint8 array or PIL image, upscaled by `scale` with nearest neighbour."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def png_data_uri(image: np.ndarray | Image.Image, scale: int = 1) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, scale)).decode("ascii")


def grid(images: np.ndarray, ncol: int, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """(N, H, W, 3) uint8 -> one (rows*(H+pad)-pad, ncol*(W+pad)-pad, 3) image, row-major."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InvalidValueError(f"grid() needs (N, H, W, 3) images, got shape {images.shape}")
    if ncol < 1:
        raise InvalidValueError(f"ncol must be >= 1, got {ncol}")
    n, h, w, _ = images.shape
    rows = (n + ncol - 1) // ncol
    out = np.full((rows * (h + pad) - pad, ncol * (w + pad) - pad, 3), pad_value, np.uint8)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = images[i]
    return out


def save_grid(images: np.ndarray, path: str | Path, ncol: int, scale: int = 4) -> Path:
    """Write a PNG grid atomically (upscaled `scale`x so 32x32 images are visible)."""
    return atomic_write_bytes(path, png_bytes(grid(images, ncol), scale))
