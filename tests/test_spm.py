"""SPM (erasekit.erasers.spm): adapters (zero at init, merged weights equal the hooked model), latent anchors,
facilitated transport (gammas, per-prompt scaling, stacking), config errors. Tiny random pipeline for the
computations; the shipped toy model's text encoder for the transport similarity."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from erasekit.edits import Edit
from erasekit.erasers.spm import Adapters, SPMConfig, Transport, merge, sample_anchors, target_modules
from erasekit.errors import IntegrityError, InvalidValueError
from erasekit.sampling import encode_prompts
from erasekit.testing import random_spm_edit


def _unet_out(pipe, prompts: list[str]) -> torch.Tensor:
    cond = encode_prompts(pipe, prompts)
    x = torch.randn(len(prompts), 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return pipe.unet(x, 500, encoder_hidden_states=cond).sample


def _random_spm(pipe, concept: str, seed: int) -> Edit:
    """An SPM edit with random (non-zero) rank-1 factors, held as factors the way spm.run builds its edit."""
    return random_spm_edit(pipe, concept, seed)


def _dense(pipe, edit: Edit) -> Edit:
    """The same edit as full tensors (SPM edit files made before edits held factors)."""
    return edit.to_dense(pipe)


def test_targets_are_the_linears_and_convs_of_transformer_blocks(tiny_pipe):
    names = set(target_modules(tiny_pipe.unet))
    blk = "down_blocks.0.attentions.0"
    assert {f"{blk}.proj_in", f"{blk}.proj_out", f"{blk}.transformer_blocks.0.attn1.to_q",
            f"{blk}.transformer_blocks.0.attn2.to_k", f"{blk}.transformer_blocks.0.attn1.to_out.0",
            f"{blk}.transformer_blocks.0.ff.net.0.proj", f"{blk}.transformer_blocks.0.ff.net.2"} <= names
    assert len(names) == 4 * 12  # 4 transformer blocks x (proj_in, proj_out, 4 + 4 attention, 2 feed-forward)
    assert not any("resnets" in n or n.startswith(("time_embedding", "conv_")) for n in names)


def test_adapter_is_zero_at_init_and_merges_exactly(tiny_pipe):
    before = _unet_out(tiny_pipe, ["a painting of Zorbo"])
    unet = copy.deepcopy(tiny_pipe.unet)
    ad = Adapters(unet, rank=1, alpha=1.0, gen=torch.Generator().manual_seed(0))
    hooked = copy.copy(tiny_pipe)
    hooked.unet = unet
    assert torch.equal(_unet_out(hooked, ["a painting of Zorbo"]), before)  # U = 0: exactly the base model
    assert all(float(layer.down.abs().sum()) > 0 for layer in ad.layers.values())  # D is initialised (kaiming)
    with torch.no_grad():
        for layer in ad.layers.values():
            layer.up.normal_(0, 0.05)
    adapted = _unet_out(hooked, ["a painting of Zorbo"])
    assert not torch.allclose(adapted, before, atol=1e-4)
    with ad.scaled(0.0):
        assert torch.equal(_unet_out(hooked, ["a painting of Zorbo"]), before)
    deltas = ad.deltas()
    ad.remove()
    merged = copy.deepcopy(tiny_pipe)
    params = dict(merged.unet.named_parameters())
    with torch.no_grad():
        for n, d in deltas.items():
            assert d.shape == params[n].shape and torch.linalg.matrix_rank(d.flatten(1)) == 1
            params[n].add_(d)
    assert torch.allclose(_unet_out(merged, ["a painting of Zorbo"]), adapted, atol=1e-5)


def test_latent_anchors_follow_the_official_recipe():
    target = torch.randn(77, 32, generator=torch.Generator().manual_seed(0)) * 3
    a = sample_anchors(target, 64, torch.Generator().manual_seed(1))
    assert a.shape == (64, 77, 32)
    ratio = a.flatten(1).norm(dim=1) / target.norm()
    assert 0.8 <= float(ratio.min()) and float(ratio.max()) <= 1.2 and float(ratio.std()) > 0.05
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), target.flatten()[None])
    assert float(cos.abs().max()) < 0.1  # random directions, nearly orthogonal to the concept
    assert torch.equal(a, sample_anchors(target, 64, torch.Generator().manual_seed(1)))


def test_transport_scales_each_prompt_and_stacks(tiny_pipe):
    e1, e2 = _random_spm(tiny_pipe, "Zorbo", 1), _random_spm(tiny_pipe, "Mossy", 2)
    prompts = ["a painting of Zorbo", "a red circle"]
    base = _unet_out(tiny_pipe, prompts)
    with e1.applied(tiny_pipe):
        full1 = _unet_out(tiny_pipe, prompts)
    both = merge(tiny_pipe, [e1, e2])
    with both.applied(tiny_pipe):
        full12 = _unet_out(tiny_pipe, prompts)
    t = Transport(tiny_pipe, [e1, e2])
    with t.active(prompts, gammas=np.array([[1.0, 0.0], [0.0, 0.0]])):
        out = _unet_out(tiny_pipe, prompts)
    assert torch.allclose(out[0], full1[0], atol=1e-5) and torch.allclose(out[1], base[1], atol=1e-6)
    assert not torch.allclose(full1[0], base[0], atol=1e-4)
    with t.active(prompts, gammas=np.ones((2, 2))):
        assert torch.allclose(_unet_out(tiny_pipe, prompts), full12, atol=1e-5)  # adapters add up
    with t.active(prompts, gammas=np.array([[0.5, 0.0], [0.0, 0.0]])):
        half = _unet_out(tiny_pipe, prompts)[0]
    assert not torch.allclose(half, full1[0], atol=1e-4) and not torch.allclose(half, base[0], atol=1e-4)
    assert torch.equal(_unet_out(tiny_pipe, prompts), base)  # hooks removed after use
    g = t.gammas(["a painting of Zorbo", "Mossy and Zorbo"])
    assert g.shape == (2, 2) and g[0, 0] == 1.0 and g[1, 0] == 1.0 and g[1, 1] == 1.0  # token overlap


def test_spm_edits_hold_rank1_factors_and_transport_equals_dense(tiny_pipe, tmp_path):
    e = _random_spm(tiny_pipe, "Zorbo", 4)
    assert not e.tensors and len(e.factors) == 4 * 12 and all(f.rank == 1 for f in e.factors.values())
    dense = _dense(tiny_pipe, e)
    assert not dense.factors and set(dense.tensors) == set(e.factors)
    assert e.num_bytes() * 4 < dense.num_bytes()  # r (out + in) numbers per layer instead of out x in
    assert e.num_parameters() == dense.num_parameters()
    loaded = Edit.load(e.save(tmp_path / "spm.safetensors"), pipe=tiny_pipe)
    assert set(loaded.factors) == set(e.factors) and (tmp_path / "spm.safetensors").stat().st_size < dense.num_bytes()
    prompts = ["a painting of Zorbo", "a red circle"]
    gam = np.array([[1.0], [0.3]])
    with Transport(tiny_pipe, loaded).active(prompts, gammas=gam):
        low = _unet_out(tiny_pipe, prompts)
    with Transport(tiny_pipe, dense).active(prompts, gammas=gam):
        full = _unet_out(tiny_pipe, prompts)
    assert torch.allclose(low, full, atol=1e-5) and not torch.allclose(low, _unet_out(tiny_pipe, prompts), atol=1e-4)


def test_transport_images_follow_gamma(tiny_pipe):
    e = _random_spm(tiny_pipe, "Zorbo", 3)
    t = Transport(tiny_pipe, e)
    prompts = ["Zorbo", "a blue square"]
    imgs = t.generate(prompts, seeds=[0, 1], steps=2)
    from erasekit import generate

    with e.applied(tiny_pipe):
        edited = generate(tiny_pipe, prompts, [0, 1], steps=2)
    base = generate(tiny_pipe, prompts, [0, 1], steps=2)
    assert t.gammas(prompts)[0, 0] == 1.0
    assert np.abs(imgs[0].astype(int) - edited[0]).max() <= 1  # gamma 1: the applied edit
    assert not np.array_equal(edited[0], base[0])


def test_transport_gamma_on_the_toy_encoder(toy_pipe_shared):
    pipe = toy_pipe_shared
    name = "down_blocks.0.attentions.0.proj_in.weight"
    w = pipe.unet.get_parameter(name).detach()
    edit = Edit.from_tensors(pipe, {f"unet.{name}": w + 1e-3}, method="spm", erase=["Zorbo"])
    g = Transport(pipe, edit).gammas(["Zorbo", "a painting of Zorbo by Felix Orme", "a red circle",
                                      "a blue triangle in the style of Alva Renn", "a tin android"])[:, 0]
    assert g[0] == pytest.approx(1.0) and g[1] == 1.0
    assert g[2] < 0.3 and g[3] < 0.3  # unrelated prompts: adapter (nearly) off
    assert g[4] > 0.8  # a paraphrase without the name (the toy encoder maps it near Zorbo)
    flat = Transport(pipe, edit, similarity="flat").gammas(["a red circle"])[0, 0]
    assert flat > 0.7  # the official whole-sequence cosine keeps the adapter on for everything
    assert Transport(pipe, edit, scaling="official") is not None


def test_transport_refuses_wrong_edits(tiny_pipe):
    e = _random_spm(tiny_pipe, "Zorbo", 1)
    with e.applied(tiny_pipe), pytest.raises(IntegrityError, match="already applied"):
        Transport(tiny_pipe, e)
    name = e.names[0]
    other = Edit.from_tensors(tiny_pipe, {name: e.factors[name]}, method="uce", erase=["Zorbo"])
    with pytest.raises(InvalidValueError, match="'uce'"):
        Transport(tiny_pipe, [other])
    with pytest.raises(InvalidValueError, match="'cos'"):
        Transport(tiny_pipe, e, similarity="cos")
    with pytest.raises(InvalidValueError, match="shape"):
        with Transport(tiny_pipe, e).active(["a", "b"], gammas=np.ones((1, 1))):
            pass


@pytest.mark.parametrize("kwargs,needle", [
    ({"rank": 0}, "rank must be >= 1, got 0"),
    ({"alpha": -1.0}, "got -1.0"),
    ({"anchors": -2}, "got -2"),
    ({"trajectory": "frozn"}, "'frozn'.*Did you mean: 'frozen'"),
    ({"ddim_steps": 1}, "ddim_steps must be >= 2, got 1"),
    ({"anchor_strength": -5.0}, "got -5.0"),
    ({"templates": ("a painting of",)}, "'a painting of'"),
])
def test_bad_config_names_the_value(kwargs, needle):
    with pytest.raises(InvalidValueError, match=needle):
        SPMConfig(**kwargs)


def test_cli_generate_with_transport(tmp_path, toy_pipe_shared):
    from click.testing import CliRunner

    from erasekit.cli import main

    pipe = toy_pipe_shared
    name = "down_blocks.0.attentions.0.proj_in.weight"
    w = pipe.unet.get_parameter(name).detach()
    path = Edit.from_tensors(pipe, {f"unet.{name}": w * 0.5}, method="spm", erase=["Zorbo"]).save(
        tmp_path / "spm.safetensors")
    out = tmp_path / "g.png"
    args = ["generate", "--prompt", "Zorbo", "--prompt", "a red circle", "-n", "1", "--steps", "2", "--edit",
            str(path), "--out", str(out)]
    res = CliRunner().invoke(main, args + ["--transport"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    from PIL import Image

    transported = np.asarray(Image.open(out))
    assert CliRunner().invoke(main, args + ["--overwrite"], catch_exceptions=False).exit_code == 0
    applied = np.asarray(Image.open(out))
    half = transported.shape[0] // 2
    assert np.abs(transported[:half].astype(int) - applied[:half]).max() <= 1  # "Zorbo": gamma 1 = the edit
    assert not np.array_equal(transported[half:], applied[half:])  # "a red circle": adapter (mostly) off

