"""SPM: One-dimensional Adapter to Rule Them All: Concepts, Diffusion Models and Erasing Applications.
Lyu, Yang, Hong, Chen, Jin, Ding, Ding, Han. CVPR 2024. arXiv:2312.16145; official code: github.com/Con6924/SPM
(`train_spm.py`, `src/models/spm.py`, `src/engine/sampling.py`, `infer_spm.py`).

A rank-r adapter ("SPM", r = 1) on every Linear and Conv2d inside every Transformer2DModel of the UNet:

    y = W x + m (alpha / r) U D x          U (out, r) zero-initialised, D (r, in[, kh, kw]) kaiming-uniform

trained (frozen original model eps_o, adapted model eps_SPM, both at the same x_t) with

    L = || eps_SPM(x_t, c) - [eps_o(x_t, n) - g (eps_o(x_t, c) - eps_o(x_t, n))] ||^2
        + beta mean_a || eps_SPM(x_t, a) - eps_o(x_t, a) ||^2                       (latent anchoring)

n: the neutral prompt (the request's guide; default ""), g = `erase_guidance`; x_t: k ~ U{1, ..., 29} of 30 DDIM
steps with CFG 3 on c, sampled by the adapted model (official; `trajectory="frozen"` uses the original). Anchors a:
a ~ N(0, I) of the shape of E(c) (77, D), normalised, accepted with probability 1 - cos(a, E(c)), rescaled to
U[0.8, 1.2] ||E(c)|| (Frobenius norms).

The edit. An `Edit` holds each adapter as its factors (`edits.LowRank(U, D, alpha / r)`, the official file's
content: r (out + in) numbers per layer), so applying it gives the merged weights W + (alpha / r) U D (m = 1) and apply
/ revert / save behave as for every method. *Facilitated transport* uses the factors directly: `Transport(pipe,
[edits])` installs, on the unedited pipeline, forward hooks that add gamma_k(p) (alpha / r) U_k (D_k x) per edit k and
per prompt p (dense SPM edits, e.g. merged ones, use Delta = W_edit - W_base), with

    gamma_k(p) = max over the erased prompts e of edit k of max(cos(E(p), E(e)), |tok(p) & tok(e)| / |tok(e)|)

(special tokens excluded). Several SPMs trained independently on the same base stack: each gets its own gamma.
`merge(pipe, edits)` folds several into one plain `Edit` (gamma = 1 each). At gamma = 1 transport gives the outputs
of the applied edit (up to float rounding); `erasekit generate --edit spm.safetensors --transport` uses it from the
CLI and the shield `spm_transport:edits=spm.safetensors` (`shields/spm_transport.py`) lets `erasekit eval` measure it.

Defaults. Official: rank 1, alpha 1, g 1, beta 1000, 4 anchor samples per step, 30 DDIM steps, 3000 iterations,
AdamW8bit lr 1e-4 with cosine restarts (3 cycles, 500 warm-up steps), float32. Ours: the same except 150 steps,
lr 5e-3 (constant) and beta 100, so that the shipped toy model erases within the "~2 minutes on 2 CPU cores" budget;
pass steps=3000 lr=1e-4 anchor_strength=1000 for the official settings. On the toy world (Zorbo, 150 steps, 8
training-caption templates) beta 1000 with lr 1e-3 or 1e-2 erased nothing (the anchoring term dominates; with
lr 1e-2 its loss grows), beta 100 with lr 5e-3 erased the bare, direct and keyword prompts fully (with templates;
beta 1000 lr 2e-3 without templates erased nothing; beta 100 without templates was not tried).

Deviations from the official code (fixes are defaults; flags give the official behaviour):
  - Transport similarity: the official `clipcos` is the cosine of the whole flattened (77 x D) text-encoder output.
    The BOS row and the padding rows, shared by every prompt, dominate it (0.7 - 0.99 for unrelated prompts on the
    toy encoder), so the adapter is almost never switched off. We use the cosine of the EOS states (CLIP's pooled
    text embedding) by default; `similarity="flat"` is the official one.
  - Transport scaling: `infer_spm.py` multiplies every tensor of the SPM state dict (both U and D) by gamma, so the
    adapter is scaled by gamma^2, and with several SPMs it sums the factors (sum U_k)(sum D_k), mixing adapters. We
    scale each adapter by gamma (the paper's description) and sum the adapters; `scaling="official"` gives gamma^2
    (identical to the official code for one SPM; the cross terms of several are not reproduced).
  - Anchor batch: the official anchor pass interleaves [uncond, anchor] pairs and then takes the second half of the
    batch as "conditional", so of `sampling_batch_size=4` sampled anchors it anchors 2, plus 2 copies of the
    unconditional prediction eps(x_t, ""). Our default reproduces that effective behaviour (anchors=2,
    anchor_null=True: eps('') is every prompt's CFG baseline, worth keeping); anchors=4 anchor_null=False is the
    paper's description.
  - The timestep fed with x_t is the DDIM timestep of the latent (958 - 33 k after k of 30 steps). The official code
    feeds index int(k * 1000 / 30) of the 1000-step schedule (999 - 33.3 k), about 40 timesteps noisier than x_t
    is; we treat that as an approximation, not a feature. Constant learning rate with torch AdamW (no 8-bit
    optimiser, no schedule).
  - `preserve_anchors=True` (off by default, not in SPM) adds the request's preserve prompts to the anchors.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..edits import Edit, LowRank
from ..config import check_choice, check_min
from ..errors import InvalidValueError
from ..sampling import encode_prompts
from . import EraseRequest, Method
from .concepts import check_templates, expand
from ._training import TrainHooks, TrainingConfig, TrainingLoop, partial_ddim, pipe_with, render_check

TRAJECTORIES = ("trained", "frozen")
SIMILARITIES = ("eos", "flat")
SCALINGS = ("gamma", "official")
TARGET_BLOCKS = ("Transformer2DModel",)


@dataclass(frozen=True)
class SPMConfig(TrainingConfig):
    steps: int = field(default=150, metadata={"help": "optimiser steps (official 3000)"})
    lr: float = field(default=5e-3, metadata={"help": "AdamW learning rate, constant (official 1e-4, cosine)"})
    rank: int = field(default=1, metadata={"help": "adapter rank r (official 1: 'one-dimensional')"})
    alpha: float = field(default=1.0, metadata={"help": "adapter scale alpha (output scaled by alpha / r)"})
    erase_guidance: float = field(default=1.0, metadata={"help": "g of the target eps(n) - g (eps(c) - eps(n))"})
    anchor_strength: float = field(default=100.0, metadata={"help": "beta, weight of latent anchoring (official 1000)"})
    anchors: int = field(default=2, metadata={
        "help": "random anchors per step (official effectively 2 of its 4 samples; paper: 4)"})
    anchor_null: bool = field(default=True, metadata={
        "help": "also anchor eps(x_t, '') with the anchors' total weight (official effective behaviour)"})
    preserve_anchors: bool = field(default=False, metadata={
        "help": "also anchor one of the request's preserve prompts per step (not in SPM)"})
    ddim_steps: int = field(default=30, metadata={"help": "DDIM steps of the partial sampling of x_t (official 30)"})
    max_stop_frac: float = field(default=1.0, metadata={
        "help": "draw the stop step from the first max_stop_frac of the DDIM steps only (high noise; official 1.0; "
                "see esd.py: toy artists are decided early)"})
    start_guidance: float = field(default=3.0, metadata={"help": "CFG scale of the partial sampling (official 3)"})
    templates: tuple[str, ...] = field(default=(), metadata={
        "help": "prompt templates with '{}' ('a painting of {}'): each erase prompt is also trained inside each "
                "(prompt augmentation; not in the official code)"})
    trajectory: str = field(default="trained", metadata={
        "help": "model that samples x_t: 'trained' (SPM on, official) or 'frozen'"})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_templates(self.templates)
        check_min(self, 1, "rank")
        check_min(self, 0, "alpha", strict=True)
        check_min(self, 0, "anchor_strength", "erase_guidance", "start_guidance", "anchors")
        check_min(self, 2, "ddim_steps")
        if not 0.0 < self.max_stop_frac <= 1.0:
            raise InvalidValueError(f"max_stop_frac must be in (0, 1], got {self.max_stop_frac}")
        check_choice("trajectory", self.trajectory, TRAJECTORIES)


# ------------------------------------------------------------------------------------------------ adapters
def target_modules(unet: nn.Module) -> dict[str, nn.Linear | nn.Conv2d]:
    """{module name: module} for every Linear / Conv2d inside every Transformer2DModel of `unet` (official targets)."""
    out: dict[str, nn.Linear | nn.Conv2d] = {}
    for name, block in unet.named_modules():
        if type(block).__name__ in TARGET_BLOCKS:
            for child, m in block.named_modules():
                if isinstance(m, nn.Linear | nn.Conv2d) and child:
                    out[f"{name}.{child}"] = m
    if not out:
        raise InvalidValueError(f"{type(unet).__name__} has no Linear/Conv2d inside a {TARGET_BLOCKS[0]}; SPM needs "
                                "an SD1.x-style UNet")
    return out


class Adapter(nn.Module):
    """(alpha / r) U D of one Linear (D: (r, in)) or Conv2d (D: (r, in, kh, kw) with the layer's stride/padding,
    U: (out, r) applied as a 1x1 convolution), as `SPMLayer` of the official code. U starts at zero."""

    def __init__(self, module: nn.Linear | nn.Conv2d, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        w = module.weight
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise InvalidValueError(f"grouped Conv2d (groups={module.groups}) is not supported by SPM adapters")
        self.conv = (module.stride, module.padding, module.dilation) if isinstance(module, nn.Conv2d) else None
        self.scale = alpha / rank
        down = torch.empty((rank, *w.shape[1:]), dtype=torch.float32)
        nn.init.kaiming_uniform_(down, a=math.sqrt(5), generator=gen)  # as nn.Linear / nn.Conv2d (official)
        self.down = nn.Parameter(down.to(w.device))
        self.up = nn.Parameter(torch.zeros((w.shape[0], rank), dtype=torch.float32, device=w.device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adapter output for the layer input x ((..., in) or (N, in, H, W))."""
        x = x.to(self.down.dtype)
        if self.conv is None:
            return F.linear(F.linear(x, self.down), self.up) * self.scale
        stride, padding, dilation = self.conv
        h = F.conv2d(x, self.down, None, stride, padding, dilation)
        return F.conv2d(h, self.up[:, :, None, None]) * self.scale

    def delta(self) -> torch.Tensor:
        """(alpha / r) U D in the shape of the layer's weight."""
        return (self.up @ self.down.flatten(1)).reshape(self.up.shape[0], *self.down.shape[1:]) * self.scale


class Adapters(nn.Module):
    """Adapters on every target module of `unet`, added to the outputs by forward hooks; `multiplier` m scales them
    (0 = the original model, no extra compute). `remove()` takes the hooks off."""

    def __init__(self, unet: nn.Module, rank: int, alpha: float, gen: torch.Generator):
        super().__init__()
        self.modules_ = target_modules(unet)
        self.layers = nn.ModuleDict({n.replace(".", "__"): Adapter(m, rank, alpha, gen)
                                     for n, m in self.modules_.items()})
        self.multiplier = 1.0
        self._handles = [m.register_forward_hook(self._hook(n.replace(".", "__"))) for n, m in self.modules_.items()]

    def _hook(self, key: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
            if self.multiplier == 0:
                return None
            return output + (self.multiplier * self.layers[key](args[0])).to(output.dtype)

        return hook

    @contextlib.contextmanager
    def scaled(self, m: float) -> Iterator[None]:
        old, self.multiplier = self.multiplier, m
        try:
            yield
        finally:
            self.multiplier = old

    def deltas(self) -> dict[str, torch.Tensor]:
        """{"<module name>.weight": (alpha / r) U D}."""
        return {f"{n}.weight": self.layers[n.replace(".", "__")].delta() for n in self.modules_}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def sample_anchors(target: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, L, D) latent anchors for the concept embedding `target` (L, D) (official `sampling.sample`)."""
    flat = target.flatten().float().cpu()
    out = []
    while len(out) < n:
        while True:
            a = torch.randn(flat.shape, generator=gen)
            a = a / a.norm()
            sim = float(F.cosine_similarity(flat, a, dim=0))
            if float(torch.rand((), generator=gen)) < 1 - sim:
                break
        scale = float(torch.rand((), generator=gen)) * 0.4 + 0.8
        out.append((scale * a * flat.norm()).reshape(target.shape))
    return torch.stack(out).to(target.device, target.dtype) if out else target.new_zeros((0, *target.shape))


# ------------------------------------------------------------------------------------------------ training
def run(pipe, request: EraseRequest, config: SPMConfig, hooks: TrainHooks) -> tuple[dict, dict]:
    """Train one SPM for the request's erase prompts; returns merged weights {"unet.<name>.weight": W + dW}."""
    import copy

    base_dtype, device = pipe.unet.dtype, pipe.unet.device
    unet = copy.deepcopy(pipe.unet).float().eval()  # never hook the caller's UNet
    unet.requires_grad_(False)
    adapters = Adapters(unet, config.rank, config.alpha, torch.Generator().manual_seed(int(config.seed)))
    params = list(adapters.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr)

    erase = expand(request.erase, config.templates)
    neutral = [g for g in request.guides("") for _ in range(1 + len(config.templates))]  # a concept's guide
    keep = list(request.preserve) if config.preserve_anchors else []
    with torch.no_grad():
        cond = encode_prompts(pipe, erase).to(device, torch.float32)  # (P, 77, D)
        neut = encode_prompts(pipe, neutral).to(device, torch.float32)  # (P, 77, D)
        uncond = encode_prompts(pipe, [""]).to(device, torch.float32)  # (1, 77, D)
        kept = encode_prompts(pipe, keep).to(device, torch.float32) if keep else None

    def step(i: int, gen: torch.Generator) -> float:
        j = int(torch.randint(len(erase), (1,), generator=gen))
        c, n = cond[j:j + 1], neut[j:j + 1]
        stop = int(torch.randint(1, max(2, round(config.ddim_steps * config.max_stop_frac)), (1,), generator=gen))
        with adapters.scaled(1.0 if config.trajectory == "trained" else 0.0):
            x, t = partial_ddim(unet, pipe.scheduler, c, uncond, config.ddim_steps, stop, config.start_guidance, gen)
        anchored = [sample_anchors(c[0], config.anchors, gen)]
        if config.anchor_null:
            anchored.append(uncond.expand(max(config.anchors, 1), -1, -1))
        if kept is not None:
            anchored.append(kept[int(torch.randint(len(kept), (1,), generator=gen))][None])
        anchors = torch.cat(anchored)  # (A, 77, D)
        a = anchors.shape[0]
        with torch.no_grad(), adapters.scaled(0.0):
            eps = unet(torch.cat([x] * (2 + a)), t, encoder_hidden_states=torch.cat([c, n, anchors])).sample
            eps_c, eps_n, eps_a = eps[0:1], eps[1:2], eps[2:]
            goal = eps_n - config.erase_guidance * (eps_c - eps_n)
        with adapters.scaled(1.0):
            pred = unet(torch.cat([x] * (1 + a)), t, encoder_hidden_states=torch.cat([c, anchors])).sample
        loss = F.mse_loss(pred[0:1], goal)
        if a:
            loss = loss + config.anchor_strength * F.mse_loss(pred[1:], eps_a)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def render():
        if base_dtype == torch.float32:
            return render_check(pipe_with(pipe, unet=unet), request.erase, hooks)
        with torch.no_grad(), merged_weights(pipe, adapters.deltas()) as check_pipe:
            return render_check(check_pipe, request.erase, hooks)

    loop = TrainingLoop("spm", config, hooks, trainable={"adapters": adapters}, optimizer=opt,
                        key_extra={"erase": erase, "neutral": neutral, "preserve": keep,
                                   "model": pipe.unet.config.get("_name_or_path", "")})
    try:
        log = loop.run(step, render=render)
    finally:
        adapters.remove()
    with torch.no_grad():
        tensors = {f"unet.{n}.weight": LowRank(a.up.detach().cpu(), a.down.detach().cpu(), a.scale)
                   for n, a in ((n, adapters.layers[n.replace(".", "__")]) for n in adapters.modules_)}
    info = {"train": log.to_dict(), "adapted_modules": len(adapters.modules_), "rank": config.rank,
            "alpha": config.alpha, "neutral": neutral,
            "transport": "erasekit.erasers.spm.Transport(pipe, [edit]) or `erasekit generate --transport`"}
    return tensors, info


@contextlib.contextmanager
def merged_weights(pipe, deltas: dict[str, torch.Tensor]) -> Iterator:
    """A pipeline whose UNet is a copy of `pipe`'s with W + delta (pipe's dtype); for check images of fp16 pipes."""
    import copy

    unet = copy.deepcopy(pipe.unet)
    params = dict(unet.named_parameters())
    for n, d in deltas.items():
        params[n].data.copy_((params[n].float() + d.to(params[n].device)).to(params[n].dtype))
    yield pipe_with(pipe, unet=unet)


METHOD = Method(name="spm", config_cls=SPMConfig, run=run, trains=True,
                paper="Lyu et al., One-dimensional Adapter to Rule Them All: Concepts, Diffusion Models and Erasing "
                      "Applications, CVPR 2024")


# ------------------------------------------------------------------------------------------------ transport
def _spm_edits(edits: Sequence[Edit] | Edit) -> list[Edit]:
    edits = [edits] if isinstance(edits, Edit) else list(edits)
    if not edits:
        raise InvalidValueError("transport needs at least one SPM edit; got none")
    for e in edits:
        if e.method != "spm":
            raise InvalidValueError(f"transport scales SPM edits; got a {e.method!r} edit (erase={e.manifest.get('erase')})"
                                    ": apply it to the pipeline first")
    return edits


class Transport:
    """Facilitated transport of SPM edits on an unedited pipeline (the edits' base weights).

        t = Transport(pipe, [edit_a, edit_b])          # checks the base hashes; pipe's weights are never changed
        t.gammas(["a photo of Zorbo", "a red circle"])  # (B, K) per prompt and edit
        images = t.generate(prompts, seeds)           # steps / guidance: the model's defaults
        with t.active(prompts): pipe(prompts, ...)      # any pipeline call whose batch is k x len(prompts)

    Inside `active(prompts)` each adapted layer's output gets sum_k gamma[b, k] Delta_k x for batch row b (the rows of
    every classifier-free-guidance half belong to prompt b mod len(prompts), as in the official code, whose
    multiplier covers the whole CFG batch). Cost: one extra matmul per adapted layer and edit.
    """

    def __init__(self, pipe, edits: Sequence[Edit] | Edit, similarity: str = "eos", scaling: str = "gamma"):
        check_choice("similarity", similarity, SIMILARITIES)
        check_choice("scaling", scaling, SCALINGS)
        self.pipe, self.edits = pipe, _spm_edits(edits)
        self.similarity, self.scaling = similarity, scaling
        for e in self.edits:
            e.check_base(pipe)  # edits made on other weights (or already applied) are refused
        from ..edits import resolve_parameter

        # per edit: {module name: LowRank (factored SPM edits) or W_edit - W_base (dense ones, base dtype)}
        self.deltas: list[dict[str, LowRank | torch.Tensor]] = []
        for e in self.edits:
            d: dict[str, LowRank | torch.Tensor] = {}
            for name in e.names:
                if not name.startswith("unet.") or not name.endswith(".weight"):
                    raise InvalidValueError(f"SPM edit tensor {name!r} is not a UNet weight")
                module = name[len("unet."):-len(".weight")]
                if name in e.factors:
                    d[module] = e.factors[name]
                else:
                    p = resolve_parameter(pipe, name)
                    d[module] = (e.tensors[name].to(p.device).float() - p.detach().float()).to(p.dtype)
            self.deltas.append(d)
        self.concepts = [list(e.manifest.get("erase", [])) for e in self.edits]
        self._concept_feats = [self._features(c) for c in self.concepts]
        self._gamma: torch.Tensor | None = None

    # -------------------------------------------------------------------------------------------- gamma
    def _features(self, prompts: Sequence[str]) -> tuple[torch.Tensor, list[set[int]]]:
        """(text vectors (N, F) float32, token-id sets without special tokens) of prompts."""
        tok = self.pipe.tokenizer(list(prompts), padding="max_length", max_length=self.pipe.tokenizer.model_max_length,
                                  truncation=True, return_tensors="pt")
        hidden = encode_prompts(self.pipe, list(prompts)).float().cpu()  # (N, 77, D)
        if self.similarity == "flat":
            vec = hidden.flatten(1)
        else:  # EOS state: the last attended position
            eos = tok.attention_mask.sum(1) - 1
            vec = hidden[torch.arange(len(prompts)), eos]
        special = set(self.pipe.tokenizer.all_special_ids)
        ids = [set(row[m.bool()].tolist()) - special for row, m in zip(tok.input_ids, tok.attention_mask)]
        return vec, ids

    def gammas(self, prompts: Sequence[str]) -> np.ndarray:
        """(B, K) transport weights in [0, 1] of each prompt for each edit (before `scaling`)."""
        vec, ids = self._features(prompts)
        out = np.zeros((len(prompts), len(self.edits)), dtype=np.float64)
        for k, (cvec, cids) in enumerate(self._concept_feats):
            cos = F.cosine_similarity(vec[:, None], cvec[None], dim=-1).numpy()  # (B, C)
            overlap = np.array([[len(p & c) / len(c) if c else 0.0 for c in cids] for p in ids])
            out[:, k] = np.maximum(cos, overlap).max(axis=1)
        return np.clip(out, 0.0, 1.0)

    # -------------------------------------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def active(self, prompts: Sequence[str], gammas: np.ndarray | None = None) -> Iterator[np.ndarray]:
        """Hooks on while generating for `prompts` (gammas: (B, K) to override the computed ones); yields gammas."""
        g = self.gammas(prompts) if gammas is None else np.asarray(gammas, dtype=np.float64)
        if g.shape != (len(prompts), len(self.edits)):
            raise InvalidValueError(f"gammas must have shape {(len(prompts), len(self.edits))}, got {g.shape}")
        eff = g ** 2 if self.scaling == "official" else g
        self._gamma = torch.as_tensor(eff, dtype=torch.float32)
        modules = dict(self.pipe.unet.named_modules())
        names = sorted({n for d in self.deltas for n in d})
        handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]
        try:
            yield g
        finally:
            for h in handles:
                h.remove()
            self._gamma = None

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
            x, g = args[0], self._gamma
            b = g.shape[0]
            if x.shape[0] % b:
                raise InvalidValueError(f"transport: a batch of {x.shape[0]} rows for {b} prompts")
            g = g.repeat(x.shape[0] // b, 1).to(output.device)  # (N, K)
            for k, d in enumerate(self.deltas):
                if name not in d or not bool((g[:, k] != 0).any()):
                    continue
                y = _delta_output(module, d[name], x, output.dtype)
                output = output + g[:, k].to(output.dtype).view(-1, *([1] * (y.dim() - 1))) * y
            return output

        return hook

    def generate(self, prompts: Sequence[str], seeds: Sequence[int] | int = 0, steps: int | None = None,
                 guidance: float | None = None, negative_prompt: str | None = None, batch_size: int = 64,
                 progress=None) -> np.ndarray:
        """Images (N, H, W, 3) uint8 as `erasekit.generate`, each prompt with its own transport weights."""
        from ..generation import generate

        prompts = list(prompts)
        if not prompts:
            raise InvalidValueError("generate() needs at least one prompt; got an empty list")
        seeds = [seeds + i for i in range(len(prompts))] if isinstance(seeds, int) else list(seeds)
        if len(seeds) != len(prompts):
            raise InvalidValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts")
        out = []
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            with self.active(chunk):
                out.append(generate(self.pipe, chunk, seeds[i:i + batch_size], steps=steps, guidance=guidance,
                                    batch_size=len(chunk), negative_prompt=negative_prompt, progress=progress))
        return np.concatenate(out)


def _delta_output(module: nn.Module, delta: LowRank | torch.Tensor, x: torch.Tensor, dtype: torch.dtype
                  ) -> torch.Tensor:
    """The output of the weight delta alone for the layer input x: scale U (D x) for factors, Delta x otherwise."""
    conv = isinstance(module, nn.Conv2d)
    if isinstance(delta, LowRank):
        up, down = delta.up.to(x.device, dtype), delta.down.to(x.device, dtype)
        if conv:
            h = F.conv2d(x.to(dtype), down, None, module.stride, module.padding, module.dilation)
            return F.conv2d(h, up[:, :, None, None]) * delta.scale
        return F.linear(F.linear(x.to(dtype), down), up) * delta.scale
    w = delta.to(x.device, dtype)
    if conv:
        return F.conv2d(x, w, None, module.stride, module.padding, module.dilation)
    return F.linear(x, w)


def _dense(delta: LowRank | torch.Tensor) -> torch.Tensor:
    return delta.delta() if isinstance(delta, LowRank) else delta.float()


def merge(pipe, edits: Sequence[Edit]) -> Edit:
    """One plain `Edit` with every SPM of `edits` (made independently on `pipe`'s weights) at gamma = 1:
    W + sum_k Delta_k. Sequentially made edits compose with `erasekit.edits.compose` instead."""
    t = Transport(pipe, edits)
    from ..edits import resolve_parameter

    tensors = {}
    for n in sorted({n for d in t.deltas for n in d}):
        p = resolve_parameter(pipe, f"unet.{n}.weight")
        total = p.detach().float() + sum(_dense(d[n]) for d in t.deltas if n in d)
        tensors[f"unet.{n}.weight"] = total.to(p.dtype)
    return Edit.from_tensors(pipe, tensors, method="spm", config={"merged": len(t.edits)},
                             erase=[c for cs in t.concepts for c in cs],
                             extra={"paper": METHOD.paper, "parts": [e.manifest.get("config") for e in t.edits],
                                    "info": {"merged_from": len(t.edits)}})


__all__ = ["Adapter", "Adapters", "METHOD", "SPMConfig", "Transport", "merge", "sample_anchors", "target_modules"]
