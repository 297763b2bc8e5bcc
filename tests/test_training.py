"""Training plumbing on tiny data: losses fall, checkpoints resume to the same weights."""

import dataclasses

import numpy as np
import pytest
import torch

from erasekit.tokenizer import clip_tokenizer
from erasekit.toyworld.dataset import build_dataset
from erasekit.toyworld.model import new_text_encoder, new_unet, train_scheduler
from erasekit.toyworld.train import TrainConfig, train_diffusion, train_vae

CFG = TrainConfig(batch_size=16, lr=1e-3, warmup=5, joint_steps=15, unet_steps=15, vae_steps=30, vae_lr=2e-3,
                  ckpt_every=10, ema_decay=0.9)


@pytest.fixture(scope="module")
def tiny_data():
    data = build_dataset(seed=0, scale=0.0015)
    return data.images[:48], data.captions[:48]


def _latents(images):
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(len(images), 4, 8, 8, generator=g)
    return mean, torch.full_like(mean, 0.05)


def _fixed_batch_loss(unet, te, captions, lat_mean) -> float:
    g = torch.Generator().manual_seed(123)
    sched = train_scheduler()
    ids = clip_tokenizer()(captions[:16], padding="max_length", max_length=77, return_tensors="pt").input_ids
    z0 = lat_mean[:16]
    noise = torch.randn(z0.shape, generator=g)
    t = torch.linspace(100, 900, 16).long()
    with torch.no_grad():
        pred = unet(sched.add_noise(z0, noise, t), t, te(ids).last_hidden_state).sample
    return float(((pred - noise) ** 2).mean())


def test_vae_steps_reduce_reconstruction_error(tiny_data, tmp_path):
    images, _ = tiny_data
    x = torch.from_numpy(images[:16]).permute(0, 3, 1, 2).float() / 127.5 - 1
    torch.manual_seed(CFG.seed)
    from erasekit.toyworld.model import new_vae

    before = new_vae()
    with torch.no_grad():
        err0 = float(((before.decode(before.encode(x).latent_dist.mode()).sample - x) ** 2).mean())
    vae, info = train_vae(images, CFG, tmp_path / "vae.pt", None)
    with torch.no_grad():
        err1 = float(((vae.decode(vae.encode(x).latent_dist.mode()).sample - x) ** 2).mean())
    assert err1 < 0.75 * err0, (err0, err1)
    assert info["scaling_factor"] > 0


def test_diffusion_steps_reduce_the_loss(tiny_data, tmp_path):
    _, captions = tiny_data
    lat_mean, lat_std = _latents(captions)
    torch.manual_seed(CFG.seed)
    unet0, te0 = new_unet(), new_text_encoder()
    before = _fixed_batch_loss(unet0, te0, captions, lat_mean)
    unet, te, info = train_diffusion(captions, lat_mean, lat_std, 1.0, CFG, tmp_path, None)
    after = _fixed_batch_loss(unet, te, captions, lat_mean)
    assert after < 0.7 * before, (before, after)
    assert len(info["loss_per_100_steps"]) == 1


def test_interrupted_training_resumes_to_identical_weights(tiny_data, tmp_path):
    _, captions = tiny_data
    lat_mean, lat_std = _latents(captions)
    cfg = dataclasses.replace(CFG, joint_steps=6, unet_steps=6, ckpt_every=4)  # checkpoints at 4 (joint), 8 (unet)
    ref_unet, ref_te, _ = train_diffusion(captions, lat_mean, lat_std, 1.0, cfg, tmp_path / "a", None)

    class Crash(Exception):
        pass

    def crash_at_10(stage, step, total, info):  # in the UNet-only stage: the resume rebuilds the text cache
        if step == 10:
            raise Crash

    with pytest.raises(Crash):
        train_diffusion(captions, lat_mean, lat_std, 1.0, cfg, tmp_path / "b", crash_at_10)
    assert (tmp_path / "b" / "diffusion.pt").exists()
    unet, te, _ = train_diffusion(captions, lat_mean, lat_std, 1.0, cfg, tmp_path / "b", None)
    for a, b in ((ref_unet, unet), (ref_te, te)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_stage_clock_adds_the_times_of_resumed_processes(tmp_path, monkeypatch):
    """A resumed run keeps the earlier processes' stage times: finished stages stand, a stage interrupted after a
    checkpoint adds its checkpointed seconds to the next process's."""
    from erasekit.toyworld import train as train_mod

    now = [1000.0]
    monkeypatch.setattr(train_mod.time, "time", lambda: now[0])
    path = tmp_path / "timings.json"
    first = train_mod.StageClock(path)
    first.start("oracle_s"); now[0] += 100; first.stop("oracle_s")
    first.start("diffusion_s"); now[0] += 40; first.checkpoint("diffusion_s"); now[0] += 7  # then it crashes
    second = train_mod.StageClock(path)
    second.start("oracle_s"); now[0] += 1; second.stop("oracle_s", skipped=True)
    second.start("diffusion_s"); now[0] += 60; second.stop("diffusion_s")
    assert second.seconds() == {"oracle_s": 100.0, "diffusion_s": 100.0}
    assert second.processes == 2
