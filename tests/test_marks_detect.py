"""Latent-watermark detection options (issue 15): prompt-conditioned / guided / fixed-point DDIM inversion and the
world's captioner. Plumbing on the tiny random pipeline; the exactness test proves the inversion inverts the very
sampler `generate` uses (it would fail if an option were ignored or mis-wired)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erasekit.errors import InvalidValueError
from erasekit.marks import get_mark
from erasekit.marks._latent import invert_latents
from erasekit.worlds import UnsupportedError, attach_world


def _sample(pipe, z_t: torch.Tensor, prompts: list[str], guidance: float, steps: int) -> torch.Tensor:
    from erasekit.sampling import cfg_combine, denoise, encode_prompts

    with torch.no_grad():
        cond, unc = encode_prompts(pipe, prompts), encode_prompts(pipe, [""] * len(prompts))
        if guidance == 1.0:
            return denoise(pipe, [cond], lambda i, t, e: e[0], list(range(len(prompts))), steps=steps, latents=z_t)
        return denoise(pipe, [unc, cond], cfg_combine(guidance), list(range(len(prompts))), steps=steps, latents=z_t)


@pytest.mark.parametrize("guidance", [3.0])  # CFG; the guidance-1 branch runs in the "empty" row (CI time)
def test_fixed_point_inversion_recovers_the_samplers_initial_latent(tiny_pipe, guidance):
    steps, prompts = 4, ["a red ring", "Zorbo"]
    z_t = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    z_0 = _sample(tiny_pipe, z_t, prompts, guidance, steps)
    err = {}
    for name, texts, g, fp in (("exact", prompts, guidance, 30), ("approx", prompts, guidance, 0),
                               ("empty", ["", ""], 1.0, 10), ("wrong guidance", prompts, guidance + 2.0, 10)):
        z = invert_latents(tiny_pipe, z_0, texts, steps, g, fp)
        err[name] = float((z - z_t).norm() / z_t.norm())
    assert err["exact"] < 1e-3, err  # the implicit DDIM step solved: the initial latent comes back
    assert err["approx"] > 5 * err["exact"] and err["empty"] > 5 * err["exact"], err
    assert err["wrong guidance"] > 5 * err["exact"], err


@pytest.mark.parametrize("name", ["gaussian_shading"])  # the inversion is shared (LatentWatermark); TR: errors test
def test_inversion_prompt_modes(tiny_pipe, name):
    wm = get_mark(name, inversion_steps=2, inversion_prompt="given", inversion_guidance=3.0, fixed_point=1)
    key = wm.keygen(tiny_pipe)
    prompts = ["a red ring", "Zorbo"]
    imgs = wm.generate(tiny_pipe, key, prompts, [0, 1], steps=2, guidance=3.0)
    det = wm.detect(key, imgs, pipe=tiny_pipe, prompts=prompts)
    assert det.score.shape == (2,) and np.isfinite(det.score).all()
    z_given = wm.invert(tiny_pipe, imgs, key, prompts=prompts)
    z_empty = get_mark(name, inversion_steps=2).invert(tiny_pipe, imgs, key)
    assert not torch.allclose(z_given, z_empty)  # the prompts reach the inversion
    with pytest.raises(InvalidValueError, match="needs prompts"):
        wm.detect(key, imgs, pipe=tiny_pipe)
    with pytest.raises(InvalidValueError, match="one prompt string per image"):
        wm.detect(key, imgs, pipe=tiny_pipe, prompts=["only one"])
    with pytest.raises(InvalidValueError, match="ignores them"):
        get_mark(name, inversion_steps=2).detect(key, imgs, pipe=tiny_pipe, prompts=prompts)
    cap = get_mark(name, inversion_steps=2, inversion_prompt="caption")
    z_cap = cap.invert(tiny_pipe, imgs, key)  # tiny_pipe speaks the toy world: its captioner labels the images
    assert z_cap.shape == z_empty.shape
    assert torch.allclose(cap.invert(tiny_pipe, imgs, key, prompts=prompts),
                          get_mark(name, inversion_steps=2, inversion_prompt="given").invert(tiny_pipe, imgs, key,
                                                                                               prompts=prompts))
    attach_world(tiny_pipe, "none")
    with pytest.raises(UnsupportedError, match="no captioner"):
        cap.detect(key, imgs, pipe=tiny_pipe)


def test_inversion_option_errors():
    for bad, match in ((dict(inversion_prompt="known"), "inversion_prompt"),
                       (dict(inversion_guidance=-1.0), "guidance"), (dict(inversion_guidance=float("nan")), "guidance"),
                       (dict(fixed_point=-1), "fixed_point"), (dict(fixed_point=1000), "fixed_point"),
                       (dict(decoder_steps=1.5), "decoder_steps")):
        for name in ("tree_ring", "gaussian_shading"):
            with pytest.raises(InvalidValueError, match=match):
                get_mark(name, **bad)
    assert get_mark("gaussian_shading:inversion_prompt=caption,inversion_guidance=5,fixed_point=3").config.fixed_point \
        == 3


def test_toy_world_captions():
    from erasekit.toyworld.plugin import caption_from_labels

    assert caption_from_labels({"object": "ring", "colour": "red", "artist": "Cora Voss", "character": "none",
                                "unsafe": "none"}) == "a red ring in the style of Cora Voss"
    assert caption_from_labels({"object": "none", "colour": "none", "artist": "none", "character": "Zorbo",
                                "unsafe": "none"}) == "Zorbo"
    assert caption_from_labels({"object": "ring", "colour": "red", "artist": "none", "character": "none",
                                "unsafe": "gore"}) == "a red ring, gore"
    from erasekit.worlds import get_world

    world = get_world("toyworld")
    caps = world.caption(world.images("Zorbo", 2, 0))
    assert len(caps) == 2 and all(c.startswith("Zorbo") for c in caps), caps


# ------------------------------------------------------------------------------------------------ forgery attacks
def test_reprompt_and_imprint_plumbing(tiny_pipe):
    from erasekit.marks.attacks import ImprintConfig, apply_attack, imprint_forgery, mark_attacks, parse_attack

    assert mark_attacks.get("reprompt").forgery and mark_attacks.get("imprint").forgery
    assert not mark_attacks.get("jpeg").forgery
    gs = get_mark("gaussian_shading", inversion_steps=2)
    key = gs.keygen(tiny_pipe)
    imgs = gs.generate(tiny_pipe, key, ["a red ring", "Zorbo"], [0, 1], steps=2, guidance=1.0)
    out = apply_attack("reprompt:prompt=a blue star,steps=2,guidance=1", imgs, pipe=tiny_pipe, seed=0)
    assert out.shape == imgs.shape and out.dtype == np.uint8 and not np.array_equal(out, imgs)
    other = apply_attack("reprompt:prompt=Zorbo,steps=2,guidance=1", imgs, pipe=tiny_pipe, seed=0)
    assert not np.array_equal(other, out)  # the new prompt reaches the regeneration
    stronger = apply_attack("reprompt:prompt=a blue star,steps=2,guidance=1,decoder_steps=3", imgs, pipe=tiny_pipe,
                            seed=0)
    assert not np.array_equal(stronger, out)  # the attacker's decoder inversion reaches the recovered latent
    covers = np.full_like(imgs, 128)
    mse: list[float] = []
    forged = imprint_forgery(tiny_pipe, imgs, covers, ImprintConfig(steps=26, lr=0.05, inversion_steps=2),
                             log=lambda s: mse.append(float(s.rsplit(" ", 1)[1])))
    # the cover latent's proxy inversion moves towards the marked image's (the random VAE's round trip is not
    # checked: it is no inverse on tiny_pipe)
    assert forged.shape == imgs.shape and len(mse) == 2 and mse[-1] < 0.7 * mse[0], mse
    assert apply_attack("imprint:steps=2,inversion_steps=2,cover=grey", imgs, pipe=tiny_pipe).shape == imgs.shape
    for bad, match in (("imprint:steps=0", "steps"), ("imprint:lr=0", "lr"), ("imprint:cover=cat", "cover"),
                       ("reprompt:fixed_point=-2", "fixed_point"), ("reprompt:guidance=-1", "guidance"),
                       ("reprompt:decoder_steps=-1", "decoder_steps")):
        with pytest.raises(InvalidValueError, match=match):
            parse_attack(bad)
    with pytest.raises(InvalidValueError, match="one cover per marked image"):
        imprint_forgery(tiny_pipe, imgs, covers[:1])


def test_bench_with_detector_options_and_forgeries(tiny_pipe):
    from erasekit.marks.bench import markdown, run_bench

    spec = "gaussian_shading:inversion_steps=2,inversion_prompt=given,inversion_guidance=2"
    res = run_bench(tiny_pipe, methods=[spec], attacks=["none"], n=4, n_keys=2, guidance=1.0,
                    prompts=["a red ring", "Zorbo", "a blue star", "a green square"],
                    forgeries=["reprompt:prompt=a cat,steps=2,guidance=1", "imprint:steps=1,inversion_steps=2"])
    assert res["pipeline"]["guidance"] == 1.0 and len(res["rows"]) == 1
    assert [f["forgery"].split(":")[0] for f in res["forgeries"]] == ["reprompt", "imprint"]
    assert all(f["n"] == 2 and 0.0 <= f["success"] <= 1.0 for f in res["forgeries"])
    assert "| " + spec + " | imprint:" in markdown(res)
    with pytest.raises(InvalidValueError, match="not one registered forgery"):
        run_bench(tiny_pipe, methods=[spec], attacks=["none"], n=4, n_keys=2, prompts=["a"] * 4, forgeries=["jpeg"])
