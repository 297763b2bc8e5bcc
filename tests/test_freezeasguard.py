"""FreezeAsGuard (publisher-learned freeze mask) and its enforcement by the relearn attack.

Plumbing on the tiny random pipeline: the mask has exactly the requested share, the pipeline is never modified, the
file round-trips, the relearn attack leaves every frozen tensor out of its fine-tune (and trains it when no mask is
given), and bad values are named. Efficacy against relearning is measured on the toy model (bench/freeze/)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from erasekit.attacks import parse_spec, run_attack
from erasekit.guards import guards
from erasekit.guards.freezeasguard import (METHOD, FreezeAsGuardConfig, FreezeMask, candidate_tensors,
                                            learn_freeze_mask, random_mask)
from erasekit.errors import InvalidValueError

FAST = {"sample_steps": 2, "guidance": 3.0, "seed": 0}
TINY = {"steps": 3, "relearn_steps": 2, "n_images": 2, "batch_size": 1, "freeze_ratio": 0.25}


def _bright(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).mean(axis=1) > 127


def _digest(pipe) -> str:
    h = hashlib.sha256()
    for _, p in sorted(pipe.unet.state_dict().items()):
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def module_pipe():
    from erasekit.testing import tiny_pipeline

    return tiny_pipeline(seed=0, world="toyworld")


@pytest.fixture(scope="module")
def learned(module_pipe):
    """(mask learned on the tiny pipeline, the UNet's digest before learning)."""
    before = _digest(module_pipe)
    mask = learn_freeze_mask(module_pipe, "Zorbo", ["Mossy"], **TINY)
    return mask, before


def test_learned_mask_has_the_requested_share_and_leaves_the_model_alone(module_pipe, learned):
    mask, before = learned
    n = len(candidate_tensors(module_pipe))
    assert len(mask.frozen) == round(0.25 * n) and mask.share_tensors == pytest.approx(len(mask.frozen) / n)
    assert 0 < mask.share_parameters < 1
    assert set(mask.scores) == set(mask.sizes) == set(candidate_tensors(module_pipe))
    assert all(0.0 <= v <= 1.0 for v in mask.scores.values())
    # the frozen tensors are the top scores
    assert min(mask.scores[n] for n in mask.frozen) >= max(v for k, v in mask.scores.items() if k not in mask.frozen)
    # 3 steps, user_interval 2: releaser at steps 0 and 2, user at step 1; 2 relearn steps
    assert len(mask.info["releaser"]) == 2 and len(mask.info["user_losses"]) == 1
    assert len(mask.info["relearn_losses"]) == 2 and mask.info["legal"] == ["Mossy"]
    assert all(r["legal"] is not None for r in mask.info["releaser"])
    assert _digest(module_pipe) == before


def test_mask_file_round_trips_and_refuses_overwrite(learned, tmp_path):
    mask, _ = learned
    path = mask.save(tmp_path / "m.json")
    back = FreezeMask.load(path)
    assert back == mask and back.sha256 == mask.sha256
    with pytest.raises(Exception, match="overwrite"):
        mask.save(path)
    mask.save(path, overwrite=True)
    (tmp_path / "bad.json").write_text('{"format": "something-else"}')
    with pytest.raises(InvalidValueError, match="bad.json"):
        FreezeMask.load(tmp_path / "bad.json")


def test_apply_to_sets_requires_grad(tiny_pipe, learned):
    import copy

    mask, _ = learned
    pipe = copy.deepcopy(tiny_pipe)
    mask.apply_to(pipe)
    frozen = {n.removeprefix("unet.") for n in mask.frozen}
    for name, p in pipe.unet.named_parameters():
        assert p.requires_grad == (name not in frozen)


@pytest.mark.parametrize("params", ["full", "lora-attn"])
def test_relearn_respects_the_freeze(tiny_pipe, tmp_path, params):
    from erasekit.attacks.relearn import target_parameters

    targets = list(target_parameters(tiny_pipe.unet, params))
    # freeze half of the attack's targets (a random mask restricted to them)
    cands = candidate_tensors(tiny_pipe)
    frozen = tuple(targets[::2])
    mask = FreezeMask(frozen, {n: float(n in frozen) for n in cands}, {n: p.numel() for n, p in cands.items()})
    path = mask.save(tmp_path / "half.json")
    kw = {"success": _bright, "prompts": ["a picture of Zorbo"], **FAST, "steps": 1, "n_images": 1, "params": params}
    free = run_attack("relearn", tiny_pipe, "Zorbo", **kw)
    guarded = run_attack("relearn", tiny_pipe, "Zorbo", freeze=str(path), **kw)
    trained = lambda res: {k.split("::")[0] for k in res.replay.tensors}  # noqa: E731
    assert set(frozen) <= trained(free)  # without the mask the frozen tensors are fine-tuned ...
    assert not set(frozen) & trained(guarded)  # ... with it, none of them is
    assert trained(guarded) == set(targets) - set(frozen)
    info = guarded.replay.info["freeze"]
    assert info["frozen_targets"] == len(frozen) and info["file_sha256"] == mask.sha256


def test_relearn_refuses_a_mask_freezing_every_target(tiny_pipe, tmp_path):
    from erasekit.attacks.relearn import target_parameters

    cands = candidate_tensors(tiny_pipe)
    frozen = tuple(target_parameters(tiny_pipe.unet, "xattn-kv"))
    path = FreezeMask(frozen, {n: float(n in frozen) for n in cands}, {n: p.numel() for n, p in cands.items()}
                      ).save(tmp_path / "kv.json")
    with pytest.raises(InvalidValueError, match="freezes every tensor"):
        run_attack("relearn", tiny_pipe, "Zorbo", success=_bright, prompts=["a picture of Zorbo"], **FAST, steps=1,
                   n_images=1, params="xattn-kv", freeze=str(path))


def test_random_mask_is_a_same_size_control(tiny_pipe, learned):
    mask, _ = learned
    ctl = random_mask(tiny_pipe, len(mask.frozen), seed=1)
    assert len(ctl.frozen) == len(mask.frozen) and ctl.frozen != mask.frozen
    assert ctl.frozen == random_mask(tiny_pipe, len(mask.frozen), seed=1).frozen
    with pytest.raises(InvalidValueError, match="n_frozen"):
        random_mask(tiny_pipe, 0)


def test_registered_as_a_guard():
    assert guards.get("freezeasguard") is METHOD and METHOD.config_cls is FreezeAsGuardConfig
    assert "freezeasguard" in guards.names()


@pytest.mark.parametrize("opts,bad", [
    ({"freeze_ratio": 0.0}, "freeze_ratio"),
    ({"freeze_ratio": 1.5}, "1.5"),
    ({"freeze_ratio": float("nan")}, "freeze_ratio"),
    ({"steps": 0}, "steps"),
    ({"temperature": 0.0}, "temperature"),
    ({"mask_lr": float("inf")}, "mask_lr"),
    ({"stepz": 3}, "stepz"),
])
def test_config_errors_name_the_bad_value(opts, bad):
    with pytest.raises(Exception, match=bad) as e:
        METHOD.make_config(opts)
    assert isinstance(e.value, ValueError)


def test_bad_inputs(tiny_pipe):
    with pytest.raises(InvalidValueError, match="illegal"):
        learn_freeze_mask(tiny_pipe, [], **TINY)
    with pytest.raises(InvalidValueError, match="config"):
        learn_freeze_mask(tiny_pipe, "Zorbo", config=FreezeAsGuardConfig(), steps=2)
    with pytest.raises(InvalidValueError, match="/no/such.json"):
        parse_spec("relearn:freeze=/no/such.json")
    with pytest.raises(InvalidValueError, match="among"):
        FreezeMask(("unet.nope",), {}, {})


def test_no_nan_weights_after_relearn_with_mask(tiny_pipe, learned, tmp_path):
    mask, _ = learned
    path = mask.save(tmp_path / "m.json")
    res = run_attack("relearn", tiny_pipe, "Zorbo", success=_bright, prompts=["a picture of Zorbo"], **FAST,
                     steps=1, n_images=1, params="full", freeze=str(path))
    assert all(torch.isfinite(t).all() for t in res.replay.tensors.values())
    assert not set(mask.frozen) & {k.split("::")[0] for k in res.replay.tensors}


def test_candidates_restrict_the_mask_and_its_random_control(module_pipe):
    """With candidates, the mask (and the same-size random control) choose only among the matching tensors; a pattern
    that matches nothing is refused in one line."""
    kv = ("*attn2.to_k.*", "*attn2.to_v.*")
    domain = candidate_tensors(module_pipe, kv)
    assert domain and all(".attn2.to_k." in n or ".attn2.to_v." in n for n in domain)
    assert len(domain) < len(candidate_tensors(module_pipe))
    mask = learn_freeze_mask(module_pipe, "Zorbo", ["Mossy"], **{**TINY, "steps": 2, "freeze_ratio": 0.5},
                             candidates=kv)
    assert set(mask.sizes) == set(domain) and len(mask.frozen) == round(0.5 * len(domain))
    ctl = random_mask(module_pipe, len(mask.frozen), seed=1, candidates=kv)
    assert set(ctl.frozen) <= set(domain) and len(ctl.frozen) == len(mask.frozen)
    with pytest.raises(InvalidValueError, match="match no UNet tensor"):
        candidate_tensors(module_pipe, ("*nope*",))
    assert METHOD.make_config({"candidates": "*attn2.to_k.*, *attn2.to_v.*"}).candidates == kv
