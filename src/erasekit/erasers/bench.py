"""Real-scale timing of the closed-form erasers: an SD1.5-sized UNet2DConditionModel and a CLIP ViT-L/14 text encoder
with random weights (configs written here, nothing downloaded), on CPU. Used by `erasekit bench closed-form` and
bench/erasure.py. Random weights make the timing representative (same shapes, same work), not the erasure.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

# SD1.5's UNet (diffusers' runwayml/stable-diffusion-v1-5 unet/config.json) and CLIP ViT-L/14's text tower
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=(320, 640, 1280, 1280),
                 down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                   "DownBlock2D"),
                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
CLIP_L14_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                     num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
                     bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)

_FIRST = ("Ada", "Bram", "Cleo", "Dario", "Elin", "Fen", "Gus", "Hana", "Ivo", "Juno")
_LAST = ("Marsh", "Quill", "Tarrant", "Vey", "Okafor", "Lindqvist", "Ibarra", "Novak", "Sato", "Wren")


def concept_names(n: int) -> list[str]:
    """`n` distinct made-up artist names (up to 100)."""
    names = [f"{f} {last}" for last in _LAST for f in _FIRST]
    if n > len(names):
        raise ValueError(f"at most {len(names)} synthetic concepts, asked for {n}")
    return names[:n]


def sd15_sized(seed: int = 0) -> SimpleNamespace:
    """Random SD1.5-sized unet + CLIP ViT-L/14 text encoder + the real CLIP tokenizer (what the erasers use)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from ..tokenizer import clip_tokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET).eval()
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L14_TEXT)).eval()
    return SimpleNamespace(unet=unet, text_encoder=text, tokenizer=clip_tokenizer())


def rss_gib() -> float:
    """Peak resident set size of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure_peak(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """Run `fn()` -> (its result, wall seconds, peak RSS increase during the call in GiB).

    On Linux the kernel's peak-RSS mark is reset first (/proc/self/clear_refs), so the increase is this call's own;
    elsewhere it is the growth of the process peak (0 if an earlier call peaked higher).
    """
    reset = False
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        pass
    before = _status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - t
    after = _status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return out, seconds, max(0, (after or 0) - (before or 0)) / 2**20


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__} " \
           f"({torch.get_num_threads()} threads)"


def real_scale_benchmark(methods: Sequence[str], counts: Sequence[int], repeats: int = 3,
                         options: dict[str, dict] | None = None, counts_for: dict[str, Sequence[int]] | None = None,
                         progress: Callable[..., None] | None = None) -> dict:
    """Median wall time of `erase(pipe, method, erase=<n made-up artists>)` per method and concept count.

    `counts_for` overrides `counts` per method. The model is built once; its load time is reported, not counted.
    Per row: median/min seconds, the largest peak-RSS increase during one edit, and the process peak RSS so far.
    """
    from . import erase

    t0 = time.perf_counter()
    pipe = sd15_sized()
    load_s = time.perf_counter() - t0
    rss_load = rss_gib()
    erase(pipe, "uce", erase=["warm up"])  # first-call overheads (thread pools, lazy imports) are not the method's
    rows = []
    for method in methods:
        for n in (counts_for or {}).get(method, counts):
            names = concept_names(n)
            times, peaks = [], []
            for _ in range(repeats):
                opts = (options or {}).get(method, {})
                _, seconds, peak = measure_peak(lambda m=method, e=names, o=opts: erase(pipe, m, erase=e, **o))
                times.append(seconds)
                peaks.append(peak)
            rows.append({"method": method, "concepts": n, "median_s": statistics.median(times), "min_s": min(times),
                         "times_s": [round(x, 4) for x in times], "peak_delta_gib": max(peaks),
                         "peak_rss_gib": rss_gib()})
            if progress is not None:
                progress(1, info=f"{method} x{n}: {statistics.median(times):.2f} s")
    n_kv = sum(1 for name, _ in pipe.unet.named_modules() if name.endswith(("attn2.to_k", "attn2.to_v")))
    return {"machine": machine(), "load_s": load_s, "rss_after_load_gib": rss_load, "repeats": repeats,
            "kv_matrices": n_kv, "rows": rows}
