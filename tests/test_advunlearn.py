"""AdvUnlearn (Zhang et al., NeurIPS 2024): published trainable set, the outer loss against a direct computation, the
inner attack touching only its prefix, retain prompts, plug-and-play swap / export of the text encoder, input errors."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import CLIPTextModel

from erasekit import erase
from erasekit.edits import Edit
from erasekit.erasers._training import pipe_with, trainable_copy
from erasekit.erasers.advunlearn import (AdvUnlearnConfig, _Original, export_text_encoder, outer_loss,
                                         retain_prompts, soft_prompt, trainable_names)
from erasekit.erasers import EraseRequest
from erasekit.errors import InvalidValueError
from erasekit.testing import tiny_pipeline

FAST = {"steps": 2, "warmup": 1, "attack_steps": 1, "ddim_steps": 2}


def _cond(pipe, prompt: str) -> torch.Tensor:
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


def test_edit_changes_every_layer_and_the_final_norm_only(tiny_pipe):
    names = {n for n, _ in tiny_pipe.text_encoder.named_parameters()}
    edit = erase(tiny_pipe, "advunlearn", erase=["Zorbo"], **FAST)
    want = {f"text_encoder.{n}" for n in names if n.startswith(("encoder.layers.", "final_layer_norm."))}
    assert set(edit.tensors) == want and len(want) == len(names) - 2  # all but token and position embeddings
    edit = erase(tiny_pipe, "advunlearn", erase=["Zorbo"], train_final_norm=False, **FAST)
    assert set(edit.tensors) == {n for n in want if "final_layer_norm" not in n}
    assert trainable_names()("text_model.final_layer_norm.weight")
    assert not trainable_names()("text_model.embeddings.token_embedding.weight")


def test_outer_loss_matches_a_direct_computation(tiny_pipe):
    unet = tiny_pipe.unet
    g = torch.Generator().manual_seed(0)
    z, rz, t = torch.randn(1, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g), 400
    c, u = _cond(tiny_pipe, "Zorbo"), _cond(tiny_pipe, "")
    r = torch.cat([_cond(tiny_pipe, "a red circle"), _cond(tiny_pipe, "a blue square")])
    te, _ = trainable_copy(tiny_pipe.text_encoder, trainable_names())
    with torch.no_grad():
        e0, ep = unet(z, t, encoder_hidden_states=u).sample, unet(z, t, encoder_hidden_states=c).sample
        rp = unet(rz, t, encoder_hidden_states=r).sample
        ids = tiny_pipe.tokenizer(["Zorbo", "a red circle", "a blue square"], padding="max_length", max_length=77,
                                  return_tensors="pt").input_ids
        h = te(ids)[0]
        en = unet(z, t, encoder_hidden_states=h[:1]).sample
        rn = unet(rz, t, encoder_hidden_states=h[1:]).sample
    loss, unlearn, retain = outer_loss(en, e0, ep, 1.0, rn, rp, 0.3)
    direct = ((en - (2 * e0 - ep)) ** 2).mean()  # eta = 1: target eps("") - (eps(c) - eps(""))
    assert float(loss) == pytest.approx(float(direct), rel=1e-5) and unlearn == pytest.approx(float(direct), rel=1e-5)
    assert retain == pytest.approx(0.0, abs=1e-10)  # the untrained copy reproduces the original on retain prompts
    loss2, _, retain2 = outer_loss(en, e0, ep, 2.0, rn + 1.0, rp, 0.3)
    assert float(loss2) == pytest.approx(float(((en - (3 * e0 - 2 * ep)) ** 2).mean()) + 0.3, rel=1e-5)
    assert retain2 == pytest.approx(1.0, rel=1e-5)


def test_inner_attack_changes_only_its_prefix(tiny_pipe):
    te, _ = trainable_copy(tiny_pipe.text_encoder, trainable_names())
    before = {n: p.detach().clone() for n, p in te.named_parameters()}
    cfg = AdvUnlearnConfig(attack_steps=3, ddim_steps=2, adv_tokens=2)
    delta, losses = soft_prompt(pipe_with(tiny_pipe, text_encoder=te), _Original(tiny_pipe), "Zorbo", cfg,
                                torch.Generator().manual_seed(0))
    assert delta.shape == (2, 32) and len(losses) == 3
    assert all(p.grad is None and torch.equal(p, before[n]) for n, p in te.named_parameters())
    assert all(p.grad is None for p in tiny_pipe.unet.parameters())


def test_retain_prompts_default_and_override():
    req = EraseRequest(("triangle",), preserve=("square",))
    pool = retain_prompts(req, AdvUnlearnConfig(), "toyworld")
    assert len(pool) == 8 * 7 + 1 and not any("triangle" in p for p in pool) and pool[-1] == "square"
    pool = retain_prompts(EraseRequest(("Eiffel Tower",)), AdvUnlearnConfig(retain_preserve=False))
    assert pool[0] == "a photo of chair"
    assert retain_prompts(req, AdvUnlearnConfig(retain=("a cat",), retain_preserve=False)) == ["a cat"]
    with pytest.raises(InvalidValueError, match="no retain prompt is left"):
        retain_prompts(req, AdvUnlearnConfig(retain=("a red triangle",), retain_preserve=False), "toyworld")


def test_plug_and_play_swap_into_another_pipeline(tiny_pipe, tmp_path):
    edit = erase(tiny_pipe, "advunlearn", erase=["Zorbo"], **FAST)
    with edit.applied(tiny_pipe):
        erased = _cond(tiny_pipe, "a painting of Zorbo")
    # another pipeline sharing the original text encoder, with a different UNet
    other = pipe_with(tiny_pipe, text_encoder=copy.deepcopy(tiny_pipe.text_encoder), unet=tiny_pipeline(seed=1).unet)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))

    def out() -> torch.Tensor:
        with torch.no_grad():
            return other.unet(x, 500, encoder_hidden_states=_cond(other, "a painting of Zorbo")).sample

    base = out()
    with edit.applied(other):
        assert torch.equal(_cond(other, "a painting of Zorbo"), erased)
        assert not torch.allclose(out(), base)
    assert torch.equal(out(), base)
    folder = export_text_encoder(tiny_pipe, edit, tmp_path / "te")
    loaded = CLIPTextModel.from_pretrained(folder)
    ids = tiny_pipe.tokenizer(["a painting of Zorbo"], padding="max_length", max_length=77,
                              return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(loaded(ids)[0], erased, atol=1e-6)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    unet_edit = Edit.from_tensors(tiny_pipe, {"unet.conv_in.bias": tiny_pipe.unet.conv_in.bias + 1}, method="x")
    with pytest.raises(InvalidValueError, match="unet.conv_in.bias"):
        export_text_encoder(tiny_pipe, unet_edit, tmp_path / "bad")


def test_bad_inputs_name_the_value():
    with pytest.raises(InvalidValueError, match="attack_method='pgdd'"):
        AdvUnlearnConfig(attack_method="pgdd")
    with pytest.raises(InvalidValueError, match="attack_init='last'"):
        AdvUnlearnConfig(attack_init="last")
    with pytest.raises(InvalidValueError, match="retain_batch must be >= 1, got 0"):
        AdvUnlearnConfig(retain_batch=0)
    with pytest.raises(InvalidValueError, match="retain contains an empty prompt ' '"):
        AdvUnlearnConfig(retain=(" ",))
    with pytest.raises(InvalidValueError, match="negative_guidance must be >= 0, got -1"):
        AdvUnlearnConfig(negative_guidance=-1)
