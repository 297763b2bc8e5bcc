"""Fine-tuning erasers, wave 2 (issue 17), part B: Co-Erasing, SafeGen, TRCE stage 2.

One table over the three methods on the tiny random SD1.x pipeline with a 2-step budget: the edit changes only the
tensors the method may train, is finite, reverts bit-exactly, resumes from its checkpoint; config errors name the bad
value. Plus the pieces whose formulas can be checked directly (decoupled attention, refinement, mosaic, hinge).
Tiny random pipelines prove plumbing, not efficacy (the toy-model numbers are in BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from erasekit import erase
from erasekit.erasers import get_eraser
from erasekit.erasers._training import TrainHooks
from erasekit.erasers.esd import parameter_names
from erasekit.errors import InvalidValueError


def _trce_allowed(name: str) -> bool:
    return ".attn1." in name or ".attn2.to_q." in name or name.endswith((".attn2.to_k.weight", ".attn2.to_v.weight"))


# method, concept, 2-step options, allowed tensor names (without "unet."), bad options -> words the error must name
# (trce_stage2: margin 1 keeps the hinge active on a random pipeline, so stage 2 trains and not only stage 1)
CASES = [
    pytest.param("coerasing", "Zorbo",
                 dict(steps=2, text_steps=1, n_images=2, sample_steps=2, fit_steps=2, ddim_steps=3),
                 None,  # the esd-x set (the default train_method) of this UNet, computed in the test
                 [({"text_steps": 3, "steps": 3}, "text_steps=3"), ({"train_method": "esd-q"}, "esd-q"),
                  ({"fit_lr": 0.0}, "fit_lr")],
                 id="coerasing"),
    pytest.param("safegen", "gore",
                 dict(steps=2, n_images=2, n_safe=2, sample_steps=2, batch_size=2),
                 lambda n: ".attn1." in n,
                 [({"mosaic_target": "blur"}, "blur"), ({"mosaic_cells": 0}, "mosaic_cells"),
                  ({"weight_mosaic": 0.0}, "weight_mosaic=0")],
                 id="safegen"),
    pytest.param("trce_stage2", "gore",
                 dict(steps=2, ddim_steps=3, reg_batch=1, margin=1.0),
                 _trce_allowed,
                 [({"early_frac": 0.0}, "early_frac"), ({"beta": 0.0}, "beta"),
                  ({"templates": ("no placeholder",)}, "no placeholder")],
                 id="trce_stage2"),
]


@pytest.mark.parametrize("method,concept,options,allowed,bad", CASES)
def test_edit_is_local_finite_reversible_and_resumable(tiny_pipe, tmp_path, method, concept, options, allowed, bad):
    unet = tiny_pipe.unet
    if allowed is None:
        allowed = set(parameter_names(unet, "esd-x")).__contains__
    before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    te_before = {k: v.clone() for k, v in tiny_pipe.text_encoder.state_dict().items()}
    hooks = TrainHooks(checkpoint_dir=tmp_path)
    edit = erase(tiny_pipe, method, erase=[concept], hooks=hooks, checkpoint_every=1, **options)
    names = [n.removeprefix("unet.") for n in edit.names]
    assert names and all(n in before for n in names), names[:3]
    bad_names = [n for n in names if not allowed(n)]
    assert not bad_names, bad_names[:3]
    assert all(torch.isfinite(t).all() for t in edit.tensors.values())
    moved = [n for n in names if not torch.equal(edit.tensors[f"unet.{n}"], before[n])]
    assert moved
    assert any((".attn2." if method == "coerasing" else ".attn1.") in n for n in moved)
    # the pipeline passed in is never modified (processors, weights, text encoder)
    assert all(torch.equal(v, before[k]) for k, v in tiny_pipe.unet.state_dict().items())
    assert all(torch.equal(v, te_before[k]) for k, v in tiny_pipe.text_encoder.state_dict().items())
    assert not any(type(p).__name__ == "DecoupledAttention" for p in tiny_pipe.unet.attn_processors.values())
    with edit.applied(tiny_pipe):
        changed = tiny_pipe.unet.state_dict()
        assert any(not torch.equal(changed[n], before[n]) for n in names)
    assert all(torch.equal(v, before[k]) for k, v in tiny_pipe.unet.state_dict().items())  # bit-exact revert
    # a second run with the same config resumes from the checkpoint of the finished run and gives the same edit
    again = erase(tiny_pipe, method, erase=[concept], hooks=TrainHooks(checkpoint_dir=tmp_path), checkpoint_every=1,
                  **options)
    assert again.manifest["info"]["train"]["resumed_from"] == options["steps"]
    assert all(torch.equal(again.tensors[k], edit.tensors[k]) for k in edit.names)


@pytest.mark.parametrize("method,concept,options,allowed,bad", CASES)
def test_config_errors_name_the_bad_value(method, concept, options, allowed, bad):
    m = get_eraser(method)
    assert dataclasses.is_dataclass(m.make_config({})) and m.trains and m.paper
    for opts, words in bad:
        with pytest.raises(InvalidValueError, match=words.replace("(", r"\(")):
            m.make_config(opts)


def test_decoupled_attention_is_ip_adapter_attention(tiny_pipe):
    """[text; image] through `DecoupledAttention` = Attn(text) + s Attn(image) before the output projection;
    scale 0 (or text alone) gives the original layer's output."""
    import copy

    import torch.nn.functional as F

    from erasekit.erasers.coerasing import install_image_attention, refine

    unet = copy.deepcopy(tiny_pipe.unet).float()
    attn = next(m for n, m in unet.named_modules() if n.endswith("attn2"))
    d = unet.config.cross_attention_dim
    g = torch.Generator().manual_seed(0)
    h = torch.randn(2, 16, attn.to_q.in_features, generator=g)
    text, image = torch.randn(2, 77, d, generator=g), torch.randn(2, 5, d, generator=g)
    with torch.no_grad():
        plain = attn(h, encoder_hidden_states=text)
        install_image_attention(unet, 77, 0.5)
        assert torch.allclose(attn(h, encoder_hidden_states=text), plain)  # text alone: unchanged path

        def heads(x):
            return x.view(2, x.shape[1], attn.heads, -1).transpose(1, 2)

        q = heads(attn.to_q(h))
        ref = (F.scaled_dot_product_attention(q, heads(attn.to_k(text)), heads(attn.to_v(text)))
               + 0.5 * F.scaled_dot_product_attention(q, heads(attn.to_k(image)), heads(attn.to_v(image))))
        ref = attn.to_out[0](ref.transpose(1, 2).reshape(2, 16, -1))
        got = attn(h, encoder_hidden_states=torch.cat([text, image], 1))
        assert torch.allclose(got, ref, atol=1e-5)
        assert not torch.allclose(got, plain, atol=1e-3)
        # refinement: rows are convex combinations of the image tokens, weighted by softmax(q k^T / sqrt(D))
        r = refine(text[:1], image[:1])
        w = torch.softmax(text[0] @ image[0].T / d ** 0.5, -1)
        assert r.shape == (1, 77, d) and torch.allclose(r[0], w @ image[0], atol=1e-5)


def test_mosaic_and_hinge_formulas():
    from erasekit.erasers.safegen import mosaic
    from erasekit.erasers.trce_stage2 import hinge, prompt_pairs
    from erasekit.erasers import EraseRequest

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    one = mosaic(x, 1)
    assert np.array_equal(one[:, 3, 5], x.reshape(2, -1, 3).mean(1).round().astype(np.uint8))
    two = mosaic(x, 2)
    assert np.array_equal(two[:, 0, 0], x[:, :4, :4].reshape(2, -1, 3).mean(1).round().astype(np.uint8))
    assert np.array_equal(mosaic(x, 8), x)
    with pytest.raises(InvalidValueError, match="mosaic_cells=9"):
        mosaic(x, 9)
    pred, prefer, reject = torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2), 2 * torch.ones(2, 1, 2, 2)
    assert torch.allclose(hinge(pred, prefer, reject, 2.0, 0.5), torch.full((2,), 0.0))  # 2 (1 - 4 + .5) < 0
    assert torch.allclose(hinge(pred, reject, prefer, 2.0, 0.5), torch.full((2,), 7.0))  # 2 (4 - 1 + .5)
    bad, good = prompt_pairs(EraseRequest(("gore",), guide=("",)), ("a red circle, {}", "{}, a ring"))
    assert bad == ["gore", "a red circle, gore", "gore, a ring"] and good == ["", "a red circle", "a ring"]
