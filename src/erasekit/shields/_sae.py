"""The sparse autoencoder of the `sae` shield: a TopK SAE on one text-encoder layer's token outputs, its training over
an unlabelled prompt corpus, and its file format (safetensors + a JSON record).

Paper: Interpret then Deactivate (ItD), "Sparse Autoencoder as a Zero-Shot Classifier for Concept Erasing in
Text-to-Image Diffusion Models" (2025); official code github.com/NANSirun/Interpret-then-deactivate (src/SAE/sae.py,
scripts/train_sae_text.py, scripts/config/config_text.json), itself adapted from OpenAI's sparse_autoencoder.

Why TopK (not L1): the paper and its official code use it (k = 64 of 524,288 features on CLIP-L layer 8); the
sparsity is fixed by k, so there is no L1 coefficient to tune per model and no shrinkage of the kept activations.

    z = ReLU(TopK_k(W_enc (x - b_pre) + b_lat))           x (N, D) one token's output of layer `layer`
    x_hat = W_dec z + b_pre                               W_dec columns unit-norm
    loss = mse_scale * ||x_hat - x||^2 / D  +  auxk_coef * NMSE(W_dec TopK_auxk(dead pre-acts) , x - x_hat)

Training (official): Adam (eps 6.25e-10), constant learning rate after a linear warm-up, decoder columns re-normed to
unit length and their gradient's parallel component removed every step, b_pre initialised at the geometric median
of a sample (Weiszfeld), mse_scale = 1 / the sample's variance, AuxK on features dead for `dead_tokens` tokens.

Deviations (each for the toy scale or for safety), stated in `SAETrainConfig`'s help too:
  - size: dictionary `expansion` x D (default 16 x 128 = 2,048 on the toy text encoder; official 524,288 on 768)
    and k = 32 (official 64); learning rate 1e-3 with a 100-step warm-up (official 1e-4, 1,000 steps, 20 epochs of
    ~40k prompts on a GPU); a fixed step budget of token mini-batches instead of epochs of prompt batches.
  - tokens: every position 1..76 of 77-padded prompts (what SD1.x conditions on); the BOS row is left out (official:
    every position of prompts padded to the batch's longest). BOS is the same for every prompt (causal attention)
    and carries no concept; the shield keeps it as it is.
  - file: safetensors with the architecture in its metadata + a JSON record (official: torch.save + config.json).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import io
from ..errors import ErasekitError, InvalidValueError

PAPER = ("Interpret then Deactivate: Sparse Autoencoder as a Zero-Shot Classifier for Concept Erasing in "
         "Text-to-Image Diffusion Models (github.com/NANSirun/Interpret-then-deactivate)")
FORMAT = "erasekit-sae/1"
META_KEY = "erasekit_sae"  # safetensors metadata entry holding the architecture (JSON)
OFFICIAL_LAYER_FRACTION = 0.75  # ItD hooks text_model.encoder.layers.8 of SD1.4's 12 layers: index round(0.75 L) - 1


@dataclass(frozen=True)
class SAETrainConfig:
    layer: int | None = field(default=None, metadata={
        "help": "text-encoder layer index whose output the SAE reads; none = round(0.75 L) - 1 (ItD: 8 of 12)"})
    expansion: int = field(default=16, metadata={
        "help": "dictionary size = expansion x hidden size (official 524288 = 683 x 768)"})
    k: int = field(default=32, metadata={"help": "active features per token, TopK (official 64)"})
    auxk: int = field(default=256, metadata={"help": "dead features revived per token by the AuxK loss (official 256)"})
    auxk_coef: float = field(default=1 / 32, metadata={"help": "weight of the AuxK loss (official 1/32)"})
    dead_tokens: int = field(default=100_000, metadata={
        "help": "a feature not firing for this many tokens is dead (official 10,000,000)"})
    prompts: int = field(default=3000, metadata={
        "help": "random scene captions drawn from the world's calibration corpus (+ every concept's name/keywords)"})
    steps: int = field(default=1500, metadata={"help": "optimiser steps (official: 20 epochs)"})
    batch_tokens: int = field(default=1024, metadata={"help": "tokens per step"})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate (official 1e-4, for 524k features)"})
    warmup: int = field(default=100, metadata={"help": "linear warm-up steps (official 1000)"})
    seed: int = field(default=0, metadata={"help": "seed of the corpus draw, the initialisation and the batches"})

    def __post_init__(self) -> None:
        for name in ("expansion", "k", "prompts", "steps", "batch_tokens", "dead_tokens"):
            if getattr(self, name) < 1:
                raise InvalidValueError(f"SAE option {name} must be >= 1, got {getattr(self, name)!r}")
        if self.auxk < 0 or self.warmup < 0:
            raise InvalidValueError(f"auxk and warmup must be >= 0, got auxk={self.auxk}, warmup={self.warmup}")
        for name in ("lr", "auxk_coef"):
            v = getattr(self, name)
            if not math.isfinite(v) or v < 0 or (name == "lr" and v == 0):
                raise InvalidValueError(f"SAE option {name} must be a finite number > 0, got {v!r}")
        if self.layer is not None and self.layer < 0:
            raise InvalidValueError(f"layer must be >= 0 (or none for the default), got {self.layer}")


# ------------------------------------------------------------------------------------------------------ the model
class SparseAutoencoder(nn.Module):
    """TopK sparse autoencoder (ItD / OpenAI `FastAutoencoder` without the sparse kernels).

    `layer` is the text-encoder layer it reads; x: (..., D) -> latents (..., F) with at most k non-zeros per row."""

    def __init__(self, d_model: int, n_features: int, k: int, layer: int, auxk: int = 0):
        super().__init__()
        if not 1 <= k <= n_features:
            raise InvalidValueError(f"k must be in 1..{n_features} (the dictionary size), got {k}")
        self.d_model, self.n_features, self.k, self.layer, self.auxk = d_model, n_features, k, layer, auxk
        self.encoder = nn.Linear(d_model, n_features, bias=False)
        self.decoder = nn.Linear(n_features, d_model, bias=False)
        self.pre_bias = nn.Parameter(torch.zeros(d_model))
        self.latent_bias = nn.Parameter(torch.zeros(n_features))
        self.register_buffer("last_nonzero", torch.zeros(n_features, dtype=torch.long), persistent=False)
        with torch.no_grad():  # tied initialisation, unit-norm decoder columns (official)
            self.decoder.weight.copy_(self.encoder.weight.T)
            self.normalise_decoder()

    def normalise_decoder(self) -> None:
        """Decoder columns (F of them, each (D,)) to unit length."""
        w = self.decoder.weight.data
        w /= w.norm(dim=0, keepdim=True).clamp_min(1e-12)

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """(..., F) encoder pre-activations."""
        return self.encoder(x - self.pre_bias) + self.latent_bias

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., D) -> (..., F) latents: ReLU of the k largest pre-activations, zero elsewhere."""
        pre = self.pre_acts(x)
        vals, inds = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, inds, vals.relu())

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(..., F) -> (..., D)."""
        return self.decoder(z) + self.pre_bias

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Training pass on x (N, D): (reconstruction (N, D), latents (N, F), AuxK reconstruction of the residual
        from dead features (N, D) or None)."""
        pre = self.pre_acts(x)
        vals, inds = pre.topk(self.k, dim=-1)
        z = torch.zeros_like(pre).scatter_(-1, inds, vals.relu())
        with torch.no_grad():  # official dead-feature statistics: tokens since each feature last fired
            fired = torch.zeros_like(self.last_nonzero).scatter_add_(
                0, inds.reshape(-1), (vals > 1e-3).long().reshape(-1)).clamp(max=1)
            self.last_nonzero.mul_(1 - fired).add_(x.shape[0])
        aux = None
        if self.auxk:
            dead = self.last_nonzero > self._dead_tokens
            if bool(dead.any()):
                masked = pre.masked_fill(~dead, float("-inf"))
                kk = min(self.auxk, int(dead.sum()))
                av, ai = masked.topk(kk, dim=-1)
                aux = self.decoder(torch.zeros_like(pre).scatter_(-1, ai, av.relu()))
        return self.decoder(z) + self.pre_bias, z, aux

    _dead_tokens: int = 10_000_000

    def architecture(self) -> dict[str, int]:
        return {"d_model": self.d_model, "n_features": self.n_features, "k": self.k, "layer": self.layer}


# ------------------------------------------------------------------------------------------------------ activations
def text_layers(pipe: Any) -> nn.ModuleList:
    """The text encoder's transformer layers (CLIPEncoderLayer list)."""
    from ..conditioning import _text_model

    return _text_model(pipe).encoder.layers


def default_layer(n_layers: int) -> int:
    """ItD's layer choice scaled to a text encoder of `n_layers` layers (12 -> 8, 3 -> 1, 2 -> 1)."""
    return max(0, min(n_layers - 1, round(OFFICIAL_LAYER_FRACTION * n_layers) - 1))


def resolve_layer(pipe: Any, layer: int | None) -> int:
    n = len(text_layers(pipe))
    if layer is None:
        return default_layer(n)
    if not 0 <= layer < n:
        raise InvalidValueError(f"layer={layer} is out of range: this text encoder has layers 0..{n - 1}")
    return layer


@contextmanager
def layer_hook(pipe: Any, layer: int, fn) -> Iterator[None]:
    """Run `fn(h) -> h'` on the output hidden states h (B, L, D) of text-encoder layer `layer` while inside the
    block (works whether the layer returns a tensor or a tuple)."""

    def hook(_module, _inputs, output):
        if isinstance(output, tuple):
            return (fn(output[0]), *output[1:])
        return fn(output)

    handle = text_layers(pipe)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def layer_outputs(pipe: Any, prompts: Sequence[str], layer: int, batch_size: int = 256) -> torch.Tensor:
    """(B, 77, D) float32 outputs of text-encoder layer `layer` for `prompts` (77-padded, as SD1.x encodes them)."""
    from ..conditioning import tokenize

    out: list[torch.Tensor] = []
    te = pipe.text_encoder
    for s in range(0, len(prompts), batch_size):
        seen: list[torch.Tensor] = []

        def grab(h: torch.Tensor) -> torch.Tensor:
            seen.append(h.detach().float().cpu())
            return h

        ids = tokenize(pipe, list(prompts[s:s + batch_size])).to(te.device)
        with layer_hook(pipe, layer, grab):
            # layers after `layer` are not needed, but a full pass keeps this independent of the encoder's code
            te(ids)
        out.append(seen[0])
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------------ training
def geometric_median(points: torch.Tensor, iters: int = 30, eps: float = 1e-6) -> torch.Tensor:
    """(D,) Weiszfeld estimate of the geometric median of points (N, D) (official init of b_pre)."""
    median = points.mean(0)
    for _ in range(iters):
        w = 1 / (points - median).norm(dim=1).clamp_min(eps)
        median = (points * w[:, None]).sum(0) / w.sum()
    return median


def sha256_texts(texts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(texts).encode()).hexdigest()


def corpus(world: Any, n: int, seed: int) -> list[str]:
    """`n` prompts from the world's calibration corpus with nothing excluded: random scenes in the training grammar
    plus every concept's name and keywords on their own. No prompt is labelled with a concept."""
    from ..worlds import UnsupportedError, get_world

    world = get_world(world)
    try:
        return list(world.calibration_prompts((), n, seed))
    except UnsupportedError:
        raise InvalidValueError(f"world {world.name!r} has no prompt corpus to train an SAE on; pass prompts=[...] "
                                "(a few thousand everyday prompts of your model's domain)") from None


def train_sae(pipe: Any, prompts: Sequence[str], config: SAETrainConfig | None = None,
              log: Any = None) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train a TopK SAE on text-encoder layer `config.layer`'s token outputs (positions 1..76) for `prompts`.

    Returns (sae in eval mode, record): the record holds the config, the data hash, the text encoder's sha256, the
    token count, the training time and the final fraction of variance unexplained (FVU, on training tokens) and the
    share of features that never fire."""
    from ..fingerprint import module_sha256

    config = config or SAETrainConfig()
    prompts = [str(p) for p in prompts]
    if not prompts or not all(p.strip() for p in prompts):
        raise InvalidValueError("train_sae needs a non-empty list of non-empty prompts")
    t0 = time.perf_counter()
    layer = resolve_layer(pipe, config.layer)
    acts = layer_outputs(pipe, prompts, layer)[:, 1:].reshape(-1, pipe.text_encoder.config.hidden_size)  # (N, D)
    if not bool(torch.isfinite(acts).all()):
        raise ErasekitError("the text encoder's activations contain NaN/inf; the SAE cannot be trained on them")
    n, d = acts.shape
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    sae = SparseAutoencoder(d, config.expansion * d, min(config.k, config.expansion * d), layer, config.auxk)
    sae._dead_tokens = config.dead_tokens
    sample = acts[torch.randperm(n, generator=gen)[:32768]]
    with torch.no_grad():
        sae.pre_bias.copy_(geometric_median(sample))
    mse_scale = 1.0 / float(((sample - sample.mean(0)) ** 2).mean().clamp_min(1e-12))
    opt = torch.optim.Adam(sae.parameters(), lr=config.lr, eps=6.25e-10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, config.warmup)))
    order = torch.randperm(n, generator=gen)
    pos = 0
    sae.train()
    for step in range(config.steps):
        if pos + config.batch_tokens > n:
            order, pos = torch.randperm(n, generator=gen), 0
        x = acts[order[pos:pos + config.batch_tokens]]
        pos += config.batch_tokens
        recon, _, aux = sae(x)
        loss = mse_scale * ((recon - x) ** 2).mean()
        if aux is not None:
            resid = (x - recon).detach()
            nmse = ((aux - resid) ** 2).mean() / ((resid - resid.mean(0)) ** 2).mean().clamp_min(1e-12)
            loss = loss + config.auxk_coef * torch.nan_to_num(nmse)
        if not bool(torch.isfinite(loss)):
            raise ErasekitError(f"SAE training diverged at step {step} (loss {float(loss)}); lower lr (now "
                                f"{config.lr})")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # official order: renorm, then project the gradient off the decoder columns
            sae.normalise_decoder()
            w, g = sae.decoder.weight.data, sae.decoder.weight.grad
            g -= (w * g).sum(0, keepdim=True) * w
        opt.step()
        sched.step()
        if log is not None and (step + 1) % max(1, config.steps // 10) == 0:
            log(step + 1, float(loss.detach()))
    with torch.no_grad():
        sae.normalise_decoder()
    sae.eval()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        held = acts[order[:min(n, 8192)]]
        z = sae.encode(held)
        fvu = float(((sae.decode(z) - held) ** 2).sum() / ((held - held.mean(0)) ** 2).sum())
        dead = float((sae.encode(acts[:min(n, 65536)]).amax(0) <= 0).float().mean())
    record = {"format": FORMAT, "paper": PAPER, "architecture": sae.architecture(), "config": asdict(config),
              "data_sha256": sha256_texts(prompts), "prompts": len(prompts), "tokens": n,
              "text_encoder_sha256": module_sha256(pipe.text_encoder), "train_seconds": round(seconds, 3),
              "fvu_train": round(fvu, 5), "dead_fraction": round(dead, 5), "threads": torch.get_num_threads()}
    return sae, record


# ------------------------------------------------------------------------------------------------------ files
def record_path(path: str | Path) -> Path:
    """The JSON record beside an SAE file: sae.safetensors -> sae.json."""
    return Path(path).with_suffix(".json")


def save_sae(sae: SparseAutoencoder, path: str | Path, record: dict[str, Any] | None = None) -> Path:
    """Write the SAE (safetensors, architecture in its metadata) and its JSON record atomically."""
    from safetensors.torch import save as st_save

    from ..io import atomic_write_bytes, atomic_write_text

    tensors = {k: v.detach().float().cpu().contiguous() for k, v in sae.state_dict().items()}
    meta = {META_KEY: json.dumps({"format": FORMAT, **sae.architecture()})}
    path = Path(path)
    atomic_write_bytes(path, st_save(tensors, metadata=meta))
    atomic_write_text(record_path(path), json.dumps({**(record or {}), "file_sha256": file_sha256(path)},
                                                    indent=1, sort_keys=True) + "\n")
    return path


def file_sha256(path: str | Path) -> str:
    return io.file_sha256(path, "SAE file", hint="; train one with `erasekit sae train --out FILE`")


def load_sae(path: str | Path) -> SparseAutoencoder:
    """An SAE saved by `save_sae`; anything else (not safetensors, wrong metadata, wrong shapes, NaN/inf) raises one
    line naming the file."""
    from safetensors import SafetensorError, safe_open

    file_sha256(path)  # readable?
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get(META_KEY, "null") or "null")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ErasekitError(f"{path} is not a safetensors SAE file ({e}); train one with `erasekit sae train`") \
            from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ErasekitError(f"{path} is not an erasekit SAE file (no {META_KEY!r} metadata of format {FORMAT})")
    try:
        sae = SparseAutoencoder(int(meta["d_model"]), int(meta["n_features"]), int(meta["k"]), int(meta["layer"]))
        sae.load_state_dict(tensors, strict=True)
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise ErasekitError(f"{path}: SAE tensors do not match its metadata ({str(e).splitlines()[0]})") from None
    if not all(bool(torch.isfinite(t).all()) for t in tensors.values()):
        raise ErasekitError(f"{path}: SAE weights contain NaN/inf; retrain it")
    return sae.eval().requires_grad_(False)


def load_record(path: str | Path) -> dict[str, Any]:
    """The JSON record beside an SAE file ({} when absent)."""
    p = record_path(path)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}


__all__ = ["PAPER", "SAETrainConfig", "SparseAutoencoder", "corpus", "default_layer", "file_sha256",
           "layer_hook", "layer_outputs", "load_record", "load_sae", "resolve_layer", "save_sae", "train_sae"]
