"""Score Forgetting Distillation (erasers/sfd.py): the one-step sampler is one step of a stock DDIM scheduler, the SiD
loss, the forget/override pairs, config validation, and a short training run on the tiny random pipeline (plumbing:
random weights prove nothing about erasure; efficacy is measured on the toy model in bench/sfd/)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import erasekit
from erasekit.errors import InvalidValueError
from erasekit.erasers import EraseRequest, get_eraser
from erasekit.erasers import sfd
from erasekit.sampling import decode, encode_prompts, initial_latents

PROMPTS = ["Zorbo", "a red circle"]
SEEDS = [3, 4]


def _weights(pipe) -> dict:
    return {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}


def test_one_step_pipeline_is_the_generator(tiny_pipe):
    """erasekit's standard generate() with the one-step scheduler, steps=1, guidance=1 equals G(z) decoded."""
    t_init = 625
    one = sfd.one_step_pipeline(tiny_pipe, t_init=t_init)
    got = erasekit.generate(one, PROMPTS, SEEDS, steps=1, guidance=1.0)
    with torch.no_grad():
        z = initial_latents(tiny_pipe, SEEDS)
        abar = tiny_pipe.scheduler.alphas_cumprod.float()
        x0 = sfd.generator_x0(tiny_pipe.unet, z, encode_prompts(tiny_pipe, PROMPTS), t_init, abar)
    want = decode(tiny_pipe, x0)
    assert got.shape == want.shape == (2, 32, 32, 3)
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    # and it is not the pipeline's own multi-step sampling
    assert not np.array_equal(got, erasekit.generate(tiny_pipe, PROMPTS, SEEDS, steps=1, guidance=1.0))
    assert type(tiny_pipe.scheduler).__name__ == "DDIMScheduler"  # the base pipeline keeps its own scheduler


def test_one_step_scheduler_refuses_bad_t_init_and_v_prediction(tiny_pipe):
    with pytest.raises(InvalidValueError, match="t_init"):
        sfd.one_step_scheduler(tiny_pipe.scheduler, 1000)
    from diffusers import DDIMScheduler

    v = DDIMScheduler.from_config(tiny_pipe.scheduler.config, prediction_type="v_prediction")
    with pytest.raises(InvalidValueError, match="epsilon"):
        sfd.one_step_scheduler(v, 625)


def test_sid_generator_loss():
    g = torch.Generator().manual_seed(0)
    x0, yr, yf = (torch.randn(3, 4, 2, 2, generator=g) for _ in range(3))
    omega = (x0 - yr).abs().mean(dim=(1, 2, 3), keepdim=True)
    want = ((yr - yf) * (yf - x0) / omega).sum(dim=(1, 2, 3))
    assert torch.allclose(sfd.sid_generator_loss(x0, yr, yf, 1.0), want, atol=1e-5)
    want12 = ((yr - yf) * ((yr - x0) - 1.2 * (yr - yf)) / omega).sum(dim=(1, 2, 3))
    assert torch.allclose(sfd.sid_generator_loss(x0, yr, yf, 1.2), want12, atol=1e-5)
    assert torch.equal(sfd.sid_generator_loss(x0, yr, yr.clone(), 1.0), torch.zeros(3))  # matched scores: no loss


def test_forget_pairs_replace_the_concept_by_its_guide():
    req = EraseRequest(("Zorbo", "nude"), guide=("a snowman", ""))
    forget, override = sfd.forget_pairs(req, ("a picture of {}",))
    assert forget == ["Zorbo", "a picture of Zorbo", "nude", "a picture of nude"]
    assert override == ["a snowman", "a picture of a snowman", "", "a picture of"]


@pytest.mark.parametrize("options, match", [
    ({"t_init": 0}, "t_init"), ({"t_init": 1000}, "t_init"), ({"t_min": 500, "t_max": 500}, "t_min"),
    ({"batch": 0}, "batch"), ({"cond_dropout": 1.0}, "cond_dropout"), ({"fake_lr": 0.0}, "fake_lr"),
    ({"remain_weight": 0.0, "forget_weight": 0.0}, "nothing"), ({"train_method": "esd-q"}, "train_method"),
    ({"templates": ("no placeholder",)}, "placeholder"), ({"fake_guidance": -1.0}, "fake_guidance"),
])
def test_config_validation(options, match):
    with pytest.raises(InvalidValueError, match=match):
        get_eraser("sfd").make_config(options)


def test_remain_prompts_come_from_the_world_without_the_concept(tiny_pipe):
    cfg = sfd.SFDConfig(n_remain=12)
    pool = sfd.remain_prompts(tiny_pipe, EraseRequest(("Zorbo",), preserve=("Mossy",)), cfg)
    assert len(pool) >= 12 and "Mossy" in pool
    assert not any("zorbo" in p.lower() for p in pool)
    assert sfd.remain_prompts(tiny_pipe, EraseRequest(("Zorbo",)), sfd.SFDConfig(remain=("a cat",))) == ["a cat"]


def test_training_run_edit_and_one_step_model(tiny_pipe, tmp_path):
    before = _weights(tiny_pipe)
    flags = {n: p.requires_grad for n, p in tiny_pipe.unet.named_parameters()}
    opts = dict(steps=3, batch=2, n_remain=6, lr=1e-3, fake_lr=1e-3, templates=("a picture of {}",))
    with pytest.raises(InvalidValueError, match="allow_empty_guide"):  # "" does not erase: refused, not a no-op
        erasekit.erase(tiny_pipe, "sfd", erase=["Zorbo"], guide="", **opts)
    opts["allow_empty_guide"] = True
    edit = erasekit.erase(tiny_pipe, "sfd", erase=["Zorbo"], guide="", **opts)
    # the pipeline is untouched (weights and grad flags), the edit holds every UNet parameter (official "all")
    assert all(torch.equal(before[n], p) for n, p in tiny_pipe.unet.named_parameters())
    assert {n: p.requires_grad for n, p in tiny_pipe.unet.named_parameters()} == flags
    assert all(p.grad is None for p in tiny_pipe.unet.parameters())
    assert len(edit.names) == len(before)
    info = edit.manifest["info"]
    assert info["train"]["steps"] == 3 and all(np.isfinite(info["train"]["losses"]))
    assert sfd.sampling_of(edit) == {"steps": 1, "guidance": 1.0, "t_init": 625, "scheduler": info["sampling"]
                                     ["scheduler"]}
    assert info["override_prompts"] == ["", "a picture of"]
    # deterministic in the seed
    again = erasekit.erase(tiny_pipe, "sfd", erase=["Zorbo"], guide="", **opts)
    assert all(torch.equal(edit.tensors[n], again.tensors[n]) for n in edit.names)

    one = sfd.one_step_pipeline(tiny_pipe, edit)
    base_imgs = erasekit.generate(one, PROMPTS, SEEDS, steps=1, guidance=1.0)
    with edit.applied(tiny_pipe):
        sfd_imgs = erasekit.generate(one, PROMPTS, SEEDS, steps=1, guidance=1.0)
    assert not np.array_equal(base_imgs, sfd_imgs)

    # a model folder sampled in one step by the standard path (model card defaults)
    folder = sfd.save_one_step_model(tiny_pipe, edit, tmp_path / "sfd-model")
    assert all(torch.equal(before[n], p) for n, p in tiny_pipe.unet.named_parameters())
    loaded = erasekit.load_pipeline(str(folder))
    from erasekit.sampling import sampling_defaults

    d = sampling_defaults(loaded)
    assert (d.steps, d.guidance) == (1, 1.0)
    assert loaded.scheduler.config.sigma_max == pytest.approx(one.scheduler.config.sigma_max)
    assert np.abs(erasekit.generate(loaded, PROMPTS, SEEDS).astype(int) - sfd_imgs.astype(int)).max() <= 1
    with pytest.raises(Exception, match="overwrite"):
        sfd.save_one_step_model(tiny_pipe, edit, folder)


def test_sampling_of_refuses_other_edits(tiny_pipe):
    edit = erasekit.erase(tiny_pipe, "uce", erase=["Zorbo"])
    with pytest.raises(InvalidValueError, match="not an SFD"):
        sfd.sampling_of(edit)
