"""Fine-tuning erasers, wave 2 (issue 17), part A: DoCo, All but One, ANT (Set You Straight).

One table over the three methods on the tiny random SD1.x pipeline with a 2-step budget: the edit changes only the
tensors the method may train, is finite, reverts bit-exactly, resumes from its checkpoint to the same result; config
errors name the bad value. Plus the formulas that can be checked directly (gradient surgery, ANT's targets and
saliency mask, the discriminator's shape). Tiny random pipelines prove plumbing, not efficacy (toy-model numbers:
BENCHMARKS.md).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from erasekit import erase
from erasekit.erasers import get_eraser
from erasekit.erasers._training import TrainHooks
from erasekit.errors import InvalidValueError

# method, concept, 2-step options, allowed tensor names (without "unet."), bad options -> words the error must name
CASES = [
    pytest.param("doco", "Zorbo", dict(steps=2, warm_up=1, n_anchor=2, anchor_steps=2),
                 lambda n: ".attn2.to_k." in n or ".attn2.to_v." in n,
                 [({"surgery": "pcgrad"}, "pcgrad"), ({"warm_up": 5, "steps": 5}, "warm_up=5"),
                  ({"disc_lr": 0.0}, "disc_lr"), ({"train_method": "esd-q"}, "esd-q")],
                 id="doco"),
    pytest.param("allbutone", "Zorbo", dict(steps=2, ddim_steps=3),
                 lambda n: ".attn2." in n,
                 [({"alt_scale": float("nan")}, "alt_scale"), ({"null_weight": -1.0}, "null_weight"),
                  ({"templates": ("no placeholder",)}, "no placeholder")],
                 id="allbutone"),
    pytest.param("ant", "Zorbo", dict(steps=2, ddim_steps=4, early_frac=0.5, saliency_steps=1),
                 lambda n: True,
                 [({"early_frac": 0.01}, "early_frac=0.01"), ({"saliency_ratio": 0.0}, "saliency_ratio"),
                  ({"alpha2": float("inf")}, "alpha2")],
                 id="ant"),
]


def _hooks(folder, interrupt: bool = False) -> TrainHooks:
    """Checkpoints in `folder`; a concept check after every step that never stops training (rate 1), or that
    raises at its first call (an interruption right after the step-1 checkpoint was written)."""

    def check(images):
        if interrupt:
            raise RuntimeError("interrupted")
        return np.ones(len(images), dtype=bool)

    return TrainHooks(check=check, check_prompts=("x",), check_seeds=(0,), sample_steps=1, checkpoint_dir=folder)


@pytest.mark.parametrize("method,concept,options,allowed,bad", CASES)
def test_edit_is_local_finite_reversible_and_resumable(tiny_pipe, tmp_path, method, concept, options, allowed, bad):
    before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    te_before = {k: v.clone() for k, v in tiny_pipe.text_encoder.state_dict().items()}
    opts = dict(options, checkpoint_every=1, check_every=1)
    edit = erase(tiny_pipe, method, erase=[concept], preserve=["Mossy"], hooks=_hooks(tmp_path / "a"), **opts)
    names = [n.removeprefix("unet.") for n in edit.names]
    assert names and all(n in before for n in names), names[:3]
    assert not [n for n in names if not allowed(n)]
    assert all(torch.isfinite(t).all() for t in edit.tensors.values())
    assert any(not torch.equal(edit.tensors[f"unet.{n}"], before[n]) for n in names)
    # the pipeline passed in is never modified
    assert all(torch.equal(v, before[k]) for k, v in tiny_pipe.unet.state_dict().items())
    assert all(torch.equal(v, te_before[k]) for k, v in tiny_pipe.text_encoder.state_dict().items())
    with edit.applied(tiny_pipe):
        changed = tiny_pipe.unet.state_dict()
        assert any(not torch.equal(changed[n], before[n]) for n in names)
    assert all(torch.equal(v, before[k]) for k, v in tiny_pipe.unet.state_dict().items())  # bit-exact revert
    # interrupted after step 1, then resumed from its checkpoint = the uninterrupted run, bit for bit
    with pytest.raises(RuntimeError, match="interrupted"):
        erase(tiny_pipe, method, erase=[concept], preserve=["Mossy"], hooks=_hooks(tmp_path / "b", True), **opts)
    again = erase(tiny_pipe, method, erase=[concept], preserve=["Mossy"], hooks=_hooks(tmp_path / "b"), **opts)
    assert again.manifest["info"]["train"]["resumed_from"] == 1
    assert all(torch.equal(again.tensors[k], edit.tensors[k]) for k in edit.names)


@pytest.mark.parametrize("method,concept,options,allowed,bad", CASES)
def test_config_errors_name_the_bad_value(method, concept, options, allowed, bad):
    m = get_eraser(method)
    assert dataclasses.is_dataclass(m.make_config({})) and m.trains and m.paper
    for opts, words in bad:
        with pytest.raises(InvalidValueError, match=words.replace("(", r"\(")):
            m.make_config(opts)


def test_gradient_surgery_removes_only_conflicts():
    from erasekit.erasers.doco import surgery_

    ge, gk = torch.tensor([1.0, -2.0]), torch.tensor([0.0, 1.0])  # cos < 0: conflict
    proj = surgery_([ge], [ge], [gk], "projection", 1.0)[0]
    assert torch.allclose(proj, torch.tensor([1.0, 0.0])) and abs(float(proj @ gk)) < 1e-6
    off = surgery_([ge], [ge], [gk], "official", 1.0)[0]  # ge - cos * gk / |gk|, cos = -2 / sqrt(5)
    assert torch.allclose(off, torch.tensor([1.0, -2.0 + 2.0 / 5 ** 0.5]))
    agree = torch.tensor([1.0, 2.0])
    assert torch.equal(surgery_([agree], [agree], [gk], "projection", 1.0)[0], agree)  # no conflict: unchanged


def test_doco_x0_and_discriminator_shapes(tiny_pipe):
    from erasekit.erasers.doco import PatchDiscriminator, pred_x0

    import copy

    sched = copy.deepcopy(tiny_pipe.scheduler)
    sched.set_timesteps(sched.config.num_train_timesteps)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([10, 900])
    ref = torch.stack([sched.step(eps[i:i + 1], int(t[i]), x[i:i + 1]).pred_original_sample[0] for i in range(2)])
    assert torch.allclose(pred_x0(eps, x, sched.alphas_cumprod[t]), ref, atol=1e-4)
    for size in (8, 64):  # 1 block for the toy's 8x8 latents, 4 (official) for SD1.x's 64x64
        d = PatchDiscriminator(4, size)
        assert d(torch.randn(2, 4, size, size)).shape == (2, 1, 3, 3)


def test_ant_windows_and_saliency_mask(tiny_pipe):
    from erasekit.erasers.ant import ANTConfig, ant_targets

    ec, en = torch.full((1, 4, 2, 2), 3.0), torch.ones(1, 4, 2, 2)
    assert torch.equal(ant_targets(ec, en, 2.0, early=True), torch.full((1, 4, 2, 2), 5.0))  # CFG direction
    assert torch.equal(ant_targets(ec, en, 2.0, early=False), torch.full((1, 4, 2, 2), -3.0))  # reversed
    assert ANTConfig(ddim_steps=50, early_frac=0.14).before_step == 7  # the official before_step
    before = {k: v.clone() for k, v in tiny_pipe.unet.state_dict().items()}
    edit = erase(tiny_pipe, "ant", erase=["Zorbo"], steps=2, ddim_steps=4, early_frac=0.5, saliency_steps=1,
                 saliency_ratio=0.25, lr=1e-2)
    changed = {n: int((edit.tensors[n] != before[n.removeprefix("unet.")]).sum()) for n in edit.names}
    assert sum(changed.values()) > 0
    over = {n: c for n, c in changed.items() if c > max(1, round(0.25 * edit.tensors[n].numel()))}
    assert not over, list(over.items())[:3]  # elements outside the mask stay bit-exact
