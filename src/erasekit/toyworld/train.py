"""`erasekit world train`: oracle, then VAE, then text encoder + UNet of the toy-world Stable Diffusion.

Stages (each checkpointed under `<out>/checkpoints/` and resumed on restart):
1. oracle: the ground-truth classifier (independent of the diffusion model);
2. vae: AutoencoderKL 32x32x3 <-> 8x8x4, MSE + L1 + tiny KL; gated on oracle accuracy of its reconstructions;
3. text: CLIP-style contrastive pretraining of the text encoder from scratch against the frozen oracle's image features
   (SD's text encoder comes pretrained contrastively on image-text pairs; ours learns the same way on the toy world,
   so that e.g. object words are well separated before the UNet relies on them);
4. joint: CLIPTextModel + UNet2DConditionModel, DDPM eps-prediction with min-SNR-5 weighting, 10% caption
   dropout, EMA of the UNet;
5. unet: the text encoder frozen, its outputs cached for every caption (the CLIP text encoder is as expensive as the UNet
   at this size), UNet training continues on the cache.
The result is a standard `StableDiffusionPipeline` (DDIM sampler) saved in fp16 with a manifest.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__
from ..io import atomic_write_text, load_checkpoint
from ..tokenizer import clip_tokenizer
from .catalogue import CATALOGUE, FAMILIES, Catalogue
from .dataset import build_dataset
from .model import SAMPLE_GUIDANCE, SAMPLE_STEPS, new_text_encoder, new_unet, new_vae, sample_scheduler, train_scheduler
from .oracle import OracleTrainConfig, ToyOracle, random_scenes, to_tensor, train_oracle
from .render import render

Progress = Callable[[str, int, int, dict], None]


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    scale: float = 1.0  # dataset size multiplier
    oracle_steps: int = 1500
    text_steps: int = 600  # contrastive text-encoder pretraining (0 = none)
    text_batch: int = 256
    text_lr: float = 1e-3
    vae_steps: int = 600
    vae_lr: float = 1e-3
    joint_steps: int = 1000
    unet_steps: int = 3500
    batch_size: int = 64
    lr: float = 6e-4
    warmup: int = 200
    min_lr_ratio: float = 0.1
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    ema_decay: float = 0.999
    ckpt_every: int = 500
    threads: int = 0  # 0: torch default
    counts: tuple[tuple[str, int], ...] = ()  # exact (concept, images) overrides: counterfactual datasets
    init_from: str = ""  # a finished toy-world folder: reuse its oracle and VAE, start from its text encoder
    grammar: str = "v1"  # "v1": captions.py; "v2": the richer grammar of captions_v2.py (issue 14)
    mark_share: float = 0.0  # share of object scenes stamped with the unnamed implicit mark (dataset_v2)
    memorized: tuple[int, ...] = ()  # duplicate counts of memorized image-caption pairs (dataset_v2)
    nameless_artist: str = ""  # an artist never named nor described in captions: a style only images evoke
    # fused AdamW, a channels-last UNet and one foreach EMA update per step (same maths, fewer kernels: BENCHMARKS.md
    # "Training time"); False = the loops that trained the shipped v1/v2 models, kept for same-run timing ratios
    speedups: bool = True

    def __post_init__(self) -> None:
        if self.grammar not in GRAMMARS:
            from ..errors import InvalidValueError

            raise InvalidValueError(f"grammar must be one of {', '.join(GRAMMARS)}, got {self.grammar!r}")

    def uses_v2_dataset(self) -> bool:
        return self.grammar != "v1" or self.mark_share > 0 or bool(self.memorized) or bool(self.nameless_artist)


GRAMMARS = ("v1", "v2")


def _save_ckpt(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _adamw(params, lr: float, weight_decay: float, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; fused (one kernel over all parameters) with `cfg.speedups`, torch's default loop otherwise."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, **({"fused": True} if cfg.speedups else {}))


class StageClock:
    """Seconds spent in each training stage, summed over every process that worked on the folder (a resumed run
    adds to the times of the runs before it). Kept in `checkpoints/timings.json`, written atomically after each stage
    and with each checkpoint, so `manifest.json` records every stage's time however often training was resumed.
    Work after the last checkpoint of an interrupted process is redone and counted again; `processes` says how many
    processes took part."""

    def __init__(self, path: Path):
        self.path = path
        state = json.loads(path.read_text()) if path.exists() else {}
        self.done: dict[str, float] = dict(state.get("done", {}))
        self.partial: dict[str, float] = dict(state.get("partial", {}))
        self.processes = int(state.get("processes", 0)) + 1
        self._start: dict[str, float] = {}

    def start(self, stage: str) -> None:
        self._start[stage] = time.time()

    def checkpoint(self, stage: str) -> None:
        """Record the stage's time so far (called when its checkpoint is written)."""
        now = time.time()
        self.partial[stage] = self.partial.get(stage, 0.0) + now - self._start[stage]
        self._start[stage] = now
        self._write()

    def stop(self, stage: str, skipped: bool = False) -> None:
        """End a stage; `skipped`: it was done by an earlier process (its recorded time stands)."""
        elapsed = time.time() - self._start.pop(stage)
        if not skipped or stage not in self.done:
            self.done[stage] = self.partial.pop(stage, 0.0) + elapsed
        self._write()

    def seconds(self) -> dict[str, float]:
        return dict(self.done)

    def _write(self) -> None:
        atomic_write_text(self.path, json.dumps({"done": self.done, "partial": self.partial,
                                                 "processes": self.processes}, indent=1))


def _lr_lambda(cfg: TrainConfig, total: int) -> Callable[[int], float]:
    def f(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup)
        cos = 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        return warm * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cos)

    return f


# ------------------------------------------------------------------------------------------------------------- VAE
def train_vae(images: np.ndarray, cfg: TrainConfig, ckpt: Path, progress: Progress | None,
              on_checkpoint: Callable[[], None] | None = None) -> tuple:
    """Train the AutoencoderKL on `images` (N,32,32,3 uint8). Returns (vae, info)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    vae = new_vae()
    opt = _adamw(vae.parameters(), cfg.vae_lr, 0.0, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, cfg.vae_steps))
    start = 0
    if ckpt.exists():
        st = load_checkpoint(ckpt)
        vae.load_state_dict(st["model"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
        gen.set_state(st["gen"])
        start = st["step"]
    x_all = to_tensor(images) * 2 - 1
    vae.train()
    for step in range(start, cfg.vae_steps):
        idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=gen)
        x = x_all[idx]
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample(generator=gen)).sample
        kl = post.kl().mean() / x[0].numel()
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if progress:
            progress("vae", step + 1, cfg.vae_steps, {"loss": float(loss.detach())})
        if (step + 1) % cfg.ckpt_every == 0 and step + 1 < cfg.vae_steps:
            _save_ckpt(ckpt, {"model": vae.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                              "gen": gen.get_state(), "step": step + 1})
            if on_checkpoint:
                on_checkpoint()
    vae.eval()
    with torch.no_grad():
        sample = x_all[torch.randperm(len(x_all), generator=gen)[:2048]]
        z = torch.cat([vae.encode(sample[i:i + 256]).latent_dist.sample(generator=gen)
                       for i in range(0, len(sample), 256)])
        std = float(z.std())
    vae.register_to_config(scaling_factor=1.0 / std)
    return vae, {"latent_std": std, "scaling_factor": 1.0 / std}


@torch.no_grad()
def vae_quality(vae, oracle: ToyOracle, n: int = 1000, seed: int = 123) -> dict:
    """PSNR of reconstructions and oracle accuracy on them (the VAE gate), on fresh renders."""
    scenes = random_scenes(n, seed)
    x = to_tensor(np.stack([render(s) for s in scenes]))
    rec = torch.cat([vae.decode(vae.encode(x[i:i + 250] * 2 - 1).latent_dist.mode()).sample for i in range(0, n, 250)])
    rec = ((rec + 1) / 2).clamp(0, 1)
    mse = float(((rec - x) ** 2).mean())
    return {"psnr_db": 10 * math.log10(1 / mse), "oracle_accuracy_on_reconstructions": oracle.accuracy(rec, scenes)}


# ------------------------------------------------------------------------------------ text-encoder pretraining
def pretrain_text_encoder(captions: list[str], image_features: torch.Tensor, cfg: TrainConfig,
                          ckpt: Path, progress: Progress | None):
    """CLIP-style InfoNCE between the text encoder's pooled (EOS) output and frozen image features (N, F).

    Captions are tokenised to the longest caption only: CLIP's text attention is causal, so positions before the
    padding are identical to those of the 77-token input. Returns (text_encoder, info)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 3)
    te = new_text_encoder()
    tok = clip_tokenizer()
    ids = tok(captions, padding="longest", truncation=True, max_length=77, return_tensors="pt").input_ids
    dim = te.config.hidden_size
    proj_t, proj_i = torch.nn.Linear(dim, dim, bias=False), torch.nn.Linear(image_features.shape[1], dim, bias=False)
    logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))
    params = list(te.parameters()) + list(proj_t.parameters()) + list(proj_i.parameters()) + [logit_scale]
    opt = _adamw(params, cfg.text_lr, 1e-2, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(dataclasses.replace(cfg, warmup=50), cfg.text_steps))
    feats = (image_features - image_features.mean(0)) / (image_features.std(0) + 1e-6)
    losses: list[float] = []
    te.train()
    for step in range(cfg.text_steps):
        idx = torch.randint(0, len(captions), (cfg.text_batch,), generator=gen)
        t = F.normalize(proj_t(te(ids[idx]).pooler_output), dim=-1)
        i = F.normalize(proj_i(feats[idx]), dim=-1)
        logits = logit_scale.exp().clamp(max=100) * t @ i.T
        # captions of identical scenes are not negatives of each other: soft targets over equal image features
        same = (feats[idx][:, None] == feats[idx][None]).all(-1).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if progress:
            progress("text", step + 1, cfg.text_steps, {"loss": float(np.mean(losses[-20:]))})
    _save_ckpt(ckpt, {"te": te.state_dict(), "losses": losses})
    return te.eval(), {"contrastive_loss_first_last_50": [float(np.mean(losses[:50])), float(np.mean(losses[-50:]))]}


# ----------------------------------------------------------------------------------------------- UNet + text encoder
def _snr_weights(sched, t: torch.Tensor, gamma: float) -> torch.Tensor:
    ac = sched.alphas_cumprod[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=gamma) / snr


def train_diffusion(captions: list[str], lat_mean: torch.Tensor, lat_std: torch.Tensor, scaling: float,
                    cfg: TrainConfig, ckpt_dir: Path, progress: Progress | None, text_encoder=None,
                    on_checkpoint: Callable[[], None] | None = None) -> tuple:
    """Joint text-encoder + UNet training, then UNet-only on cached text features. Returns (unet_ema, text_encoder, info).
    `text_encoder`: start from this one instead of a fresh one (with joint_steps=0 it stays frozen)."""
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 2)
    tok = clip_tokenizer()
    ids_all = tok(captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    empty_ids = tok([""], padding="max_length", max_length=77, return_tensors="pt").input_ids
    unet = new_unet()
    te = new_text_encoder() if text_encoder is None else text_encoder.float()
    fmt = torch.channels_last if cfg.speedups else torch.contiguous_format
    unet.to(memory_format=fmt)
    ema = copy.deepcopy(unet).requires_grad_(False)
    sched = train_scheduler()
    total = cfg.joint_steps + cfg.unet_steps
    params = list(unet.parameters()) + list(te.parameters())
    opt = _adamw(params, cfg.lr, 1e-2, cfg)
    lr_s = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, total))
    losses: list[float] = []
    start = 0
    ckpt = ckpt_dir / "diffusion.pt"
    if ckpt.exists():
        st = load_checkpoint(ckpt)
        unet.load_state_dict(st["unet"]), te.load_state_dict(st["te"]), ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"]), lr_s.load_state_dict(st["sched"])
        gen.set_state(st["gen"])
        start, losses = st["step"], st["losses"]
    ema_params, unet_params = list(ema.parameters()), list(unet.parameters())
    cache = None
    n = len(captions)
    unet.train()
    t0 = time.time()
    for step in range(start, total):
        joint = step < cfg.joint_steps
        if not joint and cache is None:  # freeze the text encoder and cache its outputs once
            te.eval().requires_grad_(False)
            with torch.no_grad():
                cache = torch.cat([te(ids_all[i:i + 512]).last_hidden_state.half() for i in range(0, n, 512)])
                empty = te(empty_ids).last_hidden_state.half()
        idx = torch.randint(0, n, (cfg.batch_size,), generator=gen)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.caption_dropout
        z0 = (lat_mean[idx] + lat_std[idx] * torch.randn(lat_mean[idx].shape, generator=gen)) * scaling
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen)
        zt = sched.add_noise(z0, noise, t)
        if joint:
            ids = torch.where(drop[:, None], empty_ids, ids_all[idx])
            cond = te(ids).last_hidden_state
        else:
            cond = torch.where(drop[:, None, None], empty, cache[idx]).float()
        pred = unet(zt.contiguous(memory_format=fmt), t, cond).sample
        w = _snr_weights(sched, t, cfg.min_snr_gamma)
        loss = (w * ((pred - noise) ** 2).mean(dim=(1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        lr_s.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            if cfg.speedups:
                torch._foreach_lerp_(ema_params, unet_params, 1 - decay)
            else:
                for pe, p in zip(ema_params, unet_params):
                    pe.lerp_(p, 1 - decay)
        losses.append(float(loss.detach()))
        if progress:
            progress("joint" if joint else "unet", step + 1, total, {"loss": float(np.mean(losses[-50:]))})
        if (step + 1) % cfg.ckpt_every == 0 and step + 1 < total:
            _save_ckpt(ckpt, {"unet": unet.state_dict(), "te": te.state_dict(), "ema": ema.state_dict(),
                              "opt": opt.state_dict(), "sched": lr_s.state_dict(), "gen": gen.get_state(),
                              "step": step + 1, "losses": losses})
            if on_checkpoint:
                on_checkpoint()
    ema.to(memory_format=torch.contiguous_format)  # safetensors stores contiguous tensors
    curve = [float(np.mean(losses[i:i + 100])) for i in range(0, len(losses), 100)]
    return ema.eval(), te.eval(), {"loss_per_100_steps": curve, "seconds_this_run": time.time() - t0}


# ------------------------------------------------------------------------------------------------------------- all
def train_world(out: str | Path, cfg: TrainConfig = TrainConfig(), catalogue: Catalogue = CATALOGUE,
                progress: Progress | None = None, command: str = "") -> Path:
    """Train everything and write a diffusers pipeline folder + oracle + manifest.json to `out`. Resumable."""
    from diffusers import StableDiffusionPipeline

    out = Path(out)
    ckpt_dir = out / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    clock = StageClock(ckpt_dir / "timings.json")

    # 1. oracle
    clock.start("oracle_s")
    init = Path(cfg.init_from) if cfg.init_from else None
    if init is not None and not (init / "oracle.json").exists():
        from ..errors import ErasekitError

        raise ErasekitError(f"init_from={cfg.init_from!r} is not a finished toy-world folder (no oracle.json)")
    oracle_done = (out / "oracle.json").exists()
    if oracle_done or init is not None:
        src = out if oracle_done else init
        oracle = ToyOracle.load(src)
        oracle_info = json.loads((src / "oracle.json").read_text()).get("training", {})
    else:
        cb = (lambda s, loss: progress("oracle", s, cfg.oracle_steps, {"loss": loss})) if progress else None
        oracle, oracle_info = train_oracle(OracleTrainConfig(steps=cfg.oracle_steps, seed=cfg.seed), catalogue, cb,
                                           version=__version__)
        oracle.save(out, extra={"training": oracle_info})
    clock.stop("oracle_s", skipped=oracle_done)

    # 2. data + VAE
    clock.start("dataset_s")
    if cfg.uses_v2_dataset():
        from .dataset_v2 import WorldV2Options, build_dataset_v2

        options = WorldV2Options(rich_captions=cfg.grammar == "v2", mark_share=cfg.mark_share,
                                 memorized=tuple(cfg.memorized), nameless_artist=cfg.nameless_artist)
        data = build_dataset_v2(cfg.seed, cfg.scale, options, catalogue, counts=dict(cfg.counts) or None)
    else:
        data = build_dataset(cfg.seed, cfg.scale, catalogue, counts=dict(cfg.counts) or None)
    clock.stop("dataset_s")
    clock.start("vae_s")
    vae_ckpt = ckpt_dir / "vae_done.pt"
    vae_done = vae_ckpt.exists()
    if vae_done:
        st = load_checkpoint(vae_ckpt)
        vae = new_vae()
        vae.load_state_dict(st["model"])
        vae.register_to_config(scaling_factor=st["info"]["scaling_factor"])
        vae_info = st["info"]
    elif init is not None:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(init / "pipeline", subfolder="vae").float()
        vae_info = {"reused_from": str(init), "scaling_factor": vae.config.scaling_factor}
    else:
        vae, vae_info = train_vae(data.images, cfg, ckpt_dir / "vae.pt", progress,
                                  on_checkpoint=lambda: clock.checkpoint("vae_s"))
        vae_info.update(vae_quality(vae, oracle))
        _save_ckpt(vae_ckpt, {"model": vae.state_dict(), "info": vae_info})
    vae.eval().requires_grad_(False)
    clock.stop("vae_s", skipped=vae_done)

    # 3. latents of the whole dataset (posterior mean and std), then the diffusion model
    clock.start("encode_s")
    with torch.no_grad():
        x = to_tensor(data.images) * 2 - 1
        dists = [vae.encode(x[i:i + 512]).latent_dist for i in range(0, len(x), 512)]
        lat_mean, lat_std = torch.cat([d.mean for d in dists]), torch.cat([d.std for d in dists])
    clock.stop("encode_s")
    clock.start("text_s")
    te0, text_info, text_done = None, {}, False
    if init is not None:
        from transformers import CLIPTextModel

        te0 = CLIPTextModel.from_pretrained(init / "pipeline", subfolder="text_encoder").float()
    elif cfg.text_steps > 0:
        te_ckpt = ckpt_dir / "text_done.pt"
        text_done = te_ckpt.exists()
        if text_done:
            te0 = new_text_encoder()
            te0.load_state_dict(load_checkpoint(te_ckpt)["te"])
        else:
            with torch.no_grad():
                feats = oracle.embed(to_tensor(data.images))
            te0, text_info = pretrain_text_encoder(data.captions, feats, cfg, te_ckpt, progress)
    clock.stop("text_s", skipped=text_done)
    clock.start("diffusion_s")
    unet, te, diff_info = train_diffusion(data.captions, lat_mean, lat_std, vae.config.scaling_factor, cfg, ckpt_dir,
                                          progress, text_encoder=te0,
                                          on_checkpoint=lambda: clock.checkpoint("diffusion_s"))
    clock.stop("diffusion_s")
    timings = clock.seconds()
    timings["total_s"] = sum(timings.values())

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=te, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=sample_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.to(torch.float16)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    card = {"world": "toyworld", "sampling": {"steps": SAMPLE_STEPS, "guidance": SAMPLE_GUIDANCE},
            "note": "read by erasekit's core: the world of this model and its sampling defaults"}
    atomic_write_text(out / "pipeline" / "erasekit.json", json.dumps(card, indent=1))
    manifest = {
        "erasekit_version": __version__, "command": command or " ".join(sys.argv), "config": asdict(cfg),
        "dataset": data.manifest, "oracle": {k: v for k, v in oracle_info.items() if k != "config"},
        "oracle_weights_sha256": oracle.sha256, "vae": vae_info, "text_pretraining": text_info, "diffusion": diff_info,
        "timings_s": timings, "training_processes": clock.processes, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "platform": platform.platform(), "families": list(FAMILIES),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1))
    return out


def export_assets(train_dir: str | Path, dest: str | Path | None = None) -> Path:
    """Copy a finished training folder's pipeline (fp16, without the tokenizer, which is rebuilt offline from the
    shipped BPE file), oracle and manifest into the package's `assets/toyworld` (or `dest`), replacing it whole."""
    import shutil

    from ..toyworld.plugin import assets_dir as toyworld_dir

    src = Path(train_dir)
    if not (src / "manifest.json").exists():
        from ..errors import ErasekitError

        raise ErasekitError(f"{str(src)!r} holds no finished training (no manifest.json)")
    dest = Path(dest) if dest is not None else toyworld_dir()
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src / "pipeline", tmp / "pipeline", ignore=shutil.ignore_patterns("tokenizer"))
    index = json.loads((tmp / "pipeline" / "model_index.json").read_text())
    index.pop("tokenizer", None)
    (tmp / "pipeline" / "model_index.json").write_text(json.dumps(index, indent=2))
    for name in ("oracle.safetensors", "oracle.json", "manifest.json"):
        shutil.copy2(src / name, tmp / name)
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest
