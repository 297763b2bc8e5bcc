"""Image-text alignment (CLIP score) with a user-supplied local CLIP checkpoint; no network, no torchvision.

    scorer = ClipScorer("/models/clip-vit-large-patch14")        # a folder saved by CLIPModel.save_pretrained
    clip_score(images, prompts, scorer)                          # float, higher is better

Convention (torchmetrics' `CLIPScore`): per pair s_i = 100 * cos(E_image(x_i), E_text(t_i)) of the projected
embeddings (`image_embeds`, `text_embeds` of `CLIPModel`), and the score is max(mean_i s_i, 0) -- clipped at 0 after
averaging, not per image (Hessel et al.'s CLIP-S clips per image and scales by 2.5 instead; not used here).

Preprocessing: transformers' PIL image processor (`CLIPImageProcessorPil`: resize the shortest edge with bicubic
resampling, centre crop, rescale to [0, 1], normalise with the checkpoint's mean/std), configured from the folder's
preprocessor_config.json, or -- when the folder has none -- CLIP's defaults at the vision tower's image size. Text:
the folder's tokenizer, or -- when it has none -- erasekit's offline CLIP BPE tokenizer (ids identical to OpenAI
CLIP's); truncated to the text tower's 77 positions. Identity: the folder, the sha256 of its weights file(s), the
preprocessing and the tokenizer used.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import InvalidValueError
from . import Metric

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")


def _weights_sha256(files: list[Path]) -> str:
    """sha256 of the one weights file, or of "name sha256" lines of several shards."""
    digests = []
    for f in files:
        h = hashlib.sha256()
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        digests.append((f.name, h.hexdigest()))
    if len(digests) == 1:
        return digests[0][1]
    return hashlib.sha256("".join(f"{n} {d}\n" for n, d in digests).encode()).hexdigest()


class ClipScorer:
    """A CLIP checkpoint from a local folder (config.json + model.safetensors or pytorch_model.bin[, tokenizer files,
    preprocessor_config.json]), scoring image-text pairs."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32):
        from transformers import CLIPModel, CLIPTokenizer
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        self.path = Path(path).expanduser()
        if not self.path.is_dir() or not (self.path / "config.json").exists():
            raise InvalidValueError(f"CLIP checkpoint {str(path)!r} is not a folder with a config.json (save one with "
                                    "CLIPModel.save_pretrained(folder)); hub ids are not fetched")
        weights = next((sorted(self.path.glob(p)) for p in WEIGHT_PATTERNS if list(self.path.glob(p))), [])
        if not weights:
            raise InvalidValueError(f"CLIP checkpoint {str(path)!r} has no weights file (*.safetensors or *.bin)")
        self.weights = weights
        self.weights_sha256 = _weights_sha256(weights)
        self.model = CLIPModel.from_pretrained(str(self.path), local_files_only=True).eval().to(device)
        self.device, self.batch_size = torch.device(device), batch_size
        has_tok = any((self.path / f).exists() for f in ("tokenizer.json", "vocab.json"))
        if has_tok:
            self.tokenizer = CLIPTokenizer.from_pretrained(str(self.path), local_files_only=True)
            self.tokenizer_source = "checkpoint folder"
        else:
            from ..tokenizer import clip_tokenizer

            self.tokenizer = clip_tokenizer()
            self.tokenizer_source = "erasekit offline CLIP BPE (the folder has no tokenizer)"
        self.max_length = int(self.model.config.text_config.max_position_embeddings)
        if (self.path / "preprocessor_config.json").exists():
            cfg = json.loads((self.path / "preprocessor_config.json").read_text())
            keep = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
                    "do_normalize", "image_mean", "image_std", "do_convert_rgb")
            self.processor = CLIPImageProcessorPil(**{k: cfg[k] for k in keep if k in cfg})
            self.processor_source = "preprocessor_config.json"
        else:
            s = int(self.model.config.vision_config.image_size)
            self.processor = CLIPImageProcessorPil(size={"shortest_edge": s}, crop_size={"height": s, "width": s})
            self.processor_source = f"CLIP defaults at {s} px (the folder has no preprocessor_config.json)"

    def pixel_values(self, images: np.ndarray) -> torch.Tensor:
        """(N, 3, S, S) normalised pixels of (N, H, W, 3) uint8 images."""
        return self.processor(images=list(images), return_tensors="pt")["pixel_values"]

    @torch.no_grad()
    def pair_scores(self, images: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """(N,) 100 * cosine of the projected embeddings of image i and text i (not clipped)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise InvalidValueError(f"clip_score reads (N, H, W, 3) uint8 images; got {images.dtype} {images.shape}")
        if len(images) != len(texts) or not len(texts):
            raise InvalidValueError(f"clip_score needs as many texts as images (>= 1); got {len(images)} images and "
                                    f"{len(texts)} texts")
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            res = self.model(input_ids=tok.input_ids.to(self.device), attention_mask=tok.attention_mask.to(self.device),
                             pixel_values=self.pixel_values(images[i:i + self.batch_size]).to(self.device))
            out.append(100 * (res.image_embeds * res.text_embeds).sum(-1).float().cpu())  # embeds are unit vectors
        return torch.cat(out).numpy().astype(np.float64)

    def identity(self) -> dict:
        return {"name": "clip_score", "checkpoint": str(self.path.resolve()),
                "weights": [f.name for f in self.weights], "weights_sha256": self.weights_sha256,
                "projection_dim": int(self.model.config.projection_dim),
                "image_size": [int(self.processor.crop_size["height"]), int(self.processor.crop_size["width"])],
                "preprocessing": self.processor_source, "tokenizer": self.tokenizer_source,
                "rule": "max(mean over pairs of 100 * cos(image_embeds, text_embeds), 0) (torchmetrics CLIPScore)"}


def clip_score(images: np.ndarray, texts: Sequence[str], scorer: ClipScorer) -> float:
    """max(mean_i 100 * cos(image_i, text_i), 0) over (N, H, W, 3) uint8 images and their N prompts."""
    return float(max(scorer.pair_scores(images, texts).mean(), 0.0))


class CLIPScore(Metric):  # registered lazily in erasekit.metrics as "clip_score"
    name = "clip_score"
    higher_is_better = True

    def __init__(self, scorer: ClipScorer):
        self.scorer = scorer
        super().__init__()

    def update(self, images: np.ndarray, texts: Sequence[str]) -> None:
        self._values += self.scorer.pair_scores(images, texts).tolist()

    def compute(self) -> float:
        return max(super().compute(), 0.0)


__all__ = ["CLIPScore", "ClipScorer", "clip_score"]
