"""Memorized-subspace pruning: Chavhan et al., "Memorized Images in Diffusion Models share a Subspace that can be
Located and Deleted", 2024 (arXiv:2406.18566). Code read: no repository of its own was found; the authors' ConceptPrune
code base holds its memorization pieces and is what we follow: github.com/ruchikachavhan/concept-prune
(wanda/wanda.py, wanda/save_union_over_time.py, neuron_receivers/wanda_receiver.py, benchmarking/inference_mem.py,
memorized prompt lists datasets/memorize_*.txt; also ruchikachavhan/diffusion-models-moe). Finding Dori (Kowalczuk et
al. 2025) attacks the method under the name "Wanda (Chavhan et al., 2024)".

Idea: memorized prompts drive a few feed-forward neurons of the UNet much harder than other prompts do, and many
different memorized prompts share those neurons. Locate them with Wanda importance scores and zero the weights.

For every UNet transformer block, the second FFN linear `ff.net.2` (W: (dim, inner); its input X: the GEGLU output,
one row per spatial token), at every sampling step t of the guided trajectories of the prompts:

    a_j(t)   = sqrt( 1/n sum_{prompts, rows r} (x_rj / ||x_r||)^2 )       (each token row L2-normalised first)
    S_ij(t)  = |W_ij| a_j(t)                                             (Wanda score; target: the memorized
                                                                          prompts `erase`, base: `preserve`)
    M_ij(t)  = [S^target_ij(t) among the top `skill_ratio` of row i] and [S^target_ij(t) > S^base_ij(t)]
    prune W_ij   if   sum_t M_ij(t) > select_ratio * T

(since |W_ij| is shared, the second condition is "neuron j is more active for memorized prompts"). The result is a
hashed, reversible `Edit` of the `ff.net.2` weights with those entries set to 0. `layers="attn_k" / "attn_v" /
"attn_kv"` scores the cross-attention key/value projections the same way (input: the text embedding rows), as the
official code's other `hook_module`s do.

Detection (optional, `detect_quantile`): the memorized prompts can be picked from `erase` by Wen et al.'s
conditional-magnitude detector (`erasekit.memorization`): only prompts whose magnitude exceeds that quantile of the
`preserve` prompts' magnitudes are used as the target set (the paper takes known memorized prompts as given).

Deviations from the official code:
  - Activation norms are averaged over generations (1/n), so the target and base sets may differ in size; the
    official code sums over equally many prompts (zipped), which gives the same comparison when the sizes match.
  - One static mask from the union over timesteps (`save_union_over_time.py`, the variant that saves a pruned
    checkpoint) -- not the per-timestep masks its inference hooks can also apply -- because an `Edit` is a weight
    change. The official config file read here does not record its `select_ratio`; 0.5 is our default.
  - Trajectories come from erasekit's sampler (`sampling.denoise`, the model's scheduler, steps and guidance), from
    `seeds` seeds per prompt; the official code runs the diffusers pipeline once per prompt with seed 0 and 50 steps.
    Both halves of the classifier-free-guidance batch are recorded, as the official hook does (`branches="both"`).
  - Layers: the UNet `ff.net.2` (official default hook_module "unet") and the cross-attention keys/values; the
    official ff.net.0.proj and text-encoder-MLP variants are not implemented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..config import check_choice
from ..errors import InvalidValueError
from . import EraseRequest, Method

FFN_OUT = "ff.net.2"  # the second feed-forward linear of a diffusers BasicTransformerBlock
BRANCHES = ("both", "cond")
# which linears are scored (the official `hook_module`s "unet", "attn_key", "attn_val"): module-name suffixes
LAYER_SETS = {"ffn": (FFN_OUT,), "attn_k": ("attn2.to_k",), "attn_v": ("attn2.to_v",),
              "attn_kv": ("attn2.to_k", "attn2.to_v")}


@dataclass(frozen=True)
class MemPruningConfig:
    skill_ratio: float = field(default=0.01, metadata={
        "help": "fraction of each weight row kept as candidates (top Wanda scores; official: 0.01)"})
    select_ratio: float = field(default=0.5, metadata={
        "help": "prune a weight selected at more than this fraction of the sampling steps"})
    seeds: int = field(default=1, metadata={"help": "generations per prompt whose activations are recorded"})
    seed: int = field(default=0, metadata={"help": "first seed (seed, seed+1, ...)"})
    steps: int | None = field(default=None, metadata={"help": "sampling steps (None: the model's default)"})
    guidance: float | None = field(default=None, metadata={"help": "guidance scale (None: the model's default)"})
    branches: str = field(default="both", metadata={
        "help": "'both': record the unconditional and conditional halves of the batch (official); 'cond': only "
                "the conditional half"})
    layers: str = field(default="ffn", metadata={
        "help": "'ffn': the second FFN linear ff.net.2 (official default); 'attn_k' / 'attn_v' / 'attn_kv': the "
                "cross-attention key / value projections (official variants), whose input is the text embedding"})
    detect_quantile: float | None = field(default=None, metadata={
        "help": "keep only erase prompts whose Wen et al. magnitude exceeds this quantile of the preserve prompts' "
                "(None: all erase prompts are the memorized set)"})

    def __post_init__(self) -> None:
        if not (0 < self.skill_ratio <= 1):
            raise InvalidValueError(f"skill_ratio must be in (0, 1], got {self.skill_ratio!r} (official: 0.01)")
        if not (0 <= self.select_ratio < 1):
            raise InvalidValueError(f"select_ratio must be in [0, 1), got {self.select_ratio!r}")
        if self.seeds < 1:
            raise InvalidValueError(f"seeds must be >= 1, got {self.seeds!r}")
        check_choice("branches", self.branches, BRANCHES)
        check_choice("layers", self.layers, tuple(LAYER_SETS))
        if self.detect_quantile is not None and not (0 <= self.detect_quantile <= 1):
            raise InvalidValueError(f"detect_quantile must be in [0, 1] or None, got {self.detect_quantile!r}")
        if self.guidance is not None and not math.isfinite(self.guidance):
            raise InvalidValueError(f"guidance must be finite, got {self.guidance!r}")


def ffn_layers(unet: torch.nn.Module, which: str = "ffn") -> dict[str, torch.nn.Linear]:
    """{module name: Linear} of the scored layers of every transformer block (`which`: a key of LAYER_SETS; default
    the `ff.net.2` linears), in sorted name order (the official order)."""
    suffixes = LAYER_SETS[which]
    layers = {n: m for n, m in unet.named_modules()
              if n.endswith(suffixes) and isinstance(m, torch.nn.Linear)}
    if not layers:
        raise InvalidValueError(f"the UNet has no layers named '*{suffixes[0]}' (not an SD1.x-style UNet)")
    return dict(sorted(layers.items()))


@torch.no_grad()
def activation_norms(pipe: Any, prompts: Sequence[str], config: MemPruningConfig) -> torch.Tensor:
    """(T, L, in) a_j(t): root-mean-square over the generations of `prompts` of the column norms of the
    row-normalised inputs to each scored layer l (`config.layers`) at sampling step t (T = sampling steps)."""
    from ..sampling import cfg_combine, denoise, encode_prompts, resolve_sampling

    steps, guidance = resolve_sampling(pipe, config.steps, config.guidance)
    layers = list(ffn_layers(pipe.unet, config.layers).values())
    width = max(m.in_features for m in layers)  # SD1.x blocks differ in width: rows padded to the widest
    acc = torch.zeros(steps, len(layers), width, dtype=torch.float64)
    state = {"step": -1}

    def unet_pre(module: torch.nn.Module, args: Any, kwargs: Any) -> None:
        state["step"] += 1

    def make_hook(li: int):
        def hook(module: torch.nn.Module, args: tuple) -> None:
            x = args[0]
            if config.branches == "cond":  # batch = [uncond; cond] in equal halves
                x = x[x.shape[0] // 2:]
            rows = x.reshape(-1, x.shape[-1]).double()
            rows = rows / rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
            acc[state["step"], li, :rows.shape[1]] += (rows ** 2).sum(0).cpu()
        return hook

    handles = [pipe.unet.register_forward_pre_hook(unet_pre, with_kwargs=True)]
    handles += [m.register_forward_pre_hook(make_hook(i)) for i, m in enumerate(layers)]
    n = 0
    try:
        prompts = list(prompts)
        for s in range(config.seeds):
            state["step"] = -1
            cond, uncond = encode_prompts(pipe, prompts), encode_prompts(pipe, [""] * len(prompts))
            seeds = [config.seed + s * len(prompts) + i for i in range(len(prompts))]
            denoise(pipe, [uncond, cond], cfg_combine(guidance), seeds, steps=steps)
            n += len(prompts)
    finally:
        for h in handles:
            h.remove()
    out = (acc / n).sqrt().float()
    if not torch.isfinite(out).all():
        raise InvalidValueError("the recorded layer inputs are NaN or inf; the model is broken")
    return out


def wanda_masks(weight: torch.Tensor, a_target: torch.Tensor, a_base: torch.Tensor, skill_ratio: float
                ) -> torch.Tensor:
    """(T, out, in) bool per-step masks: top-`skill_ratio` Wanda scores |W| a_target of each row that also beat
    the base score. weight (out, in); a_target, a_base (T, in)."""
    w = weight.detach().abs().float().cpu()
    k = int(skill_ratio * w.shape[1])
    masks = torch.zeros(a_target.shape[0], *w.shape, dtype=torch.bool)
    if k == 0:
        return masks
    for t in range(a_target.shape[0]):
        s_t, s_b = w * a_target[t][None], w * a_base[t][None]
        top = torch.zeros_like(w, dtype=torch.bool).scatter_(1, s_t.topk(k, dim=1).indices, True)
        masks[t] = top & (s_t > s_b)
    return masks


def select_memorized(pipe: Any, prompts: Sequence[str], others: Sequence[str], quantile: float,
                     config: MemPruningConfig) -> tuple[list[str], list[float], float]:
    """(prompts whose Wen et al. magnitude exceeds the `quantile` of `others`', all prompts' magnitudes, threshold)."""
    import numpy as np

    from ..memorization import prompt_magnitudes

    kw = {"steps": config.steps, "guidance": config.guidance}
    d = prompt_magnitudes(pipe, list(prompts), config.seeds, config.seed, **kw)
    d_o = prompt_magnitudes(pipe, list(others), config.seeds, config.seed, **kw)
    thr = float(np.quantile(d_o, quantile))
    return [p for p, x in zip(prompts, d) if x > thr], [float(x) for x in d], thr


def mempruning(pipe: Any, request: EraseRequest, config: MemPruningConfig) -> tuple[dict[str, torch.Tensor], dict]:
    """Zero the weights of the scored layers (default `ff.net.2`) whose Wanda scores single out the memorized
    prompts `request.erase` against the ordinary prompts `request.preserve`."""
    if not request.preserve:
        raise InvalidValueError("mempruning needs preserve=[...]: ordinary (non-memorized) prompts to contrast the "
                                "memorized ones with (e.g. training captions seen once)")
    targets, info = list(request.erase), {}
    if config.detect_quantile is not None:
        targets, mags, thr = select_memorized(pipe, request.erase, request.preserve, config.detect_quantile, config)
        info.update(detected=targets, magnitudes=mags, detect_threshold=thr)
        if not targets:
            raise InvalidValueError(f"no erase prompt's memorization magnitude exceeds the {config.detect_quantile} "
                                    f"quantile ({thr:.4g}) of the preserve prompts'; lower detect_quantile or pass "
                                    "detect_quantile=None to prune for all erase prompts")
    a_t = activation_norms(pipe, targets, config)
    a_b = activation_norms(pipe, request.preserve, config)
    steps = a_t.shape[0]
    tensors: dict[str, torch.Tensor] = {}
    per_layer: dict[str, int] = {}
    total = 0
    for li, (name, module) in enumerate(ffn_layers(pipe.unet, config.layers).items()):
        w = module.weight
        width = w.shape[1]
        counts = wanda_masks(w, a_t[:, li, :width], a_b[:, li, :width], config.skill_ratio).sum(0)
        prune = counts > config.select_ratio * steps
        total += w.numel()
        if prune.any():
            new = w.detach().clone()
            new[prune.to(new.device)] = 0
            tensors[f"unet.{name}.weight"] = new
            per_layer[name] = int(prune.sum())
    pruned = sum(per_layer.values())
    if not pruned:
        raise InvalidValueError(f"no weight of the {config.layers} layers singles out the erase prompts against the "
                                f"preserve prompts (skill_ratio={config.skill_ratio}, select_ratio="
                                f"{config.select_ratio}); raise skill_ratio or lower select_ratio, or check that the "
                                "erase prompts are memorized")
    info.update(pruned_weights=pruned, scored_weights=total, layers=config.layers,
                pruned_fraction=pruned / max(total, 1), per_layer=per_layer, sampling_steps=steps, targets=len(targets))
    return tensors, info


METHOD = Method("mempruning", MemPruningConfig, mempruning,
                paper="Chavhan et al., Memorized Images in Diffusion Models share a Subspace that can be Located and "
                      "Deleted, 2024 (Wanda-score pruning of FFN weights)")
