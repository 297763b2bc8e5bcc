"""Recovery attacks (concept inversion, relearning, in-context re-introduction) and membership inference.

Plumbing on the tiny random pipeline with 2-step budgets: each attack runs end to end, reports pre/post detection,
replays its images bit-exactly (and leaves the model untouched), respects its budget, and names bad values. The AUC
function is checked on hand-made scores. Efficacy is measured on the toy model (BENCHMARKS.md)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from erasekit.attacks import Replay, parse_spec, run_attack
from erasekit.attacks._recovery import budget_curve
from erasekit.errors import InvalidValueError, UnknownNameError
from erasekit.membership import auc, denoising_losses, membership_inference, membership_scores

CASES = [
    ("concept_inversion", {"steps": 2, "n_images": 2}),
    ("relearn", {"steps": 2, "n_images": 2}),
    ("relearn", {"steps": 2, "n_images": 2, "params": "xattn-kv", "variant": "benign"}),
    ("incontext", {"n_images": 2, "strength": 0.5}),
]
FAST = {"sample_steps": 2, "guidance": 3.0, "seed": 0}


def test_every_recovery_attack_is_in_the_table():
    from test_attacks import RECOVERY_ATTACKS

    assert {name for name, _ in CASES} == set(RECOVERY_ATTACKS)


def _bright(images: np.ndarray) -> np.ndarray:
    """A deterministic stand-in success check for random models."""
    return images.reshape(len(images), -1).mean(1) > 120


def _weights(pipe) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for m in (pipe.unet, pipe.text_encoder) for k, v in m.state_dict().items()}


@pytest.mark.parametrize("name,opts", CASES, ids=lambda c: c if isinstance(c, str) else ",".join(map(str, c.values())))
def test_attack_end_to_end(tiny_pipe, name, opts):
    before = _weights(tiny_pipe)
    prompts = ["a picture of Zorbo", "Zorbo on a table"]
    res = run_attack(name, tiny_pipe, "Zorbo", success=_bright, prompts=prompts, **FAST, **opts)
    assert res.concept == "Zorbo" and len(res.pre) == len(res.post) == 2
    assert all(isinstance(x, bool) for x in res.pre + res.post)
    assert not any(lg.skipped for lg in res.logs)  # recovery attacks measure post-attack detection on every prompt
    # the model is never left modified (relearn adds its deltas only around generation)
    after = _weights(tiny_pipe)
    assert all(torch.equal(before[k], after[k]) for k in before)
    # replay reproduces the images the post-attack check saw
    images = res.generate(tiny_pipe)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert _bright(images).tolist() == res.post
    assert np.array_equal(images, res.generate(tiny_pipe))
    d = res.to_dict()
    assert d["attack"] == name and d["config"]["skip_broken"] is False
    if name == "concept_inversion":
        assert res.kind == "embedding" and res.embeddings.shape[:2] == (2, 77)
        assert all("<inv>" in p and "Zorbo" not in p for p in res.adv_prompts)
        assert res.logs[0].steps == 2 and len(res.logs[0].losses) == 2
    elif name == "relearn":
        assert isinstance(res.replay, Replay) and res.replay.info["steps"] == 2
        assert len(res.replay.info["losses"]) == 2
        suffix = "::delta" if opts.get("params") == "xattn-kv" else "::up"
        assert all(k.endswith((suffix, "::down")) for k in res.replay.tensors)
        # the fine-tune changes the images (deltas are applied) unless its update is exactly zero
        assert any(float(v.abs().max()) > 0 for k, v in res.replay.tensors.items() if not k.endswith("::down"))
        if opts.get("variant") == "benign":
            assert "Zorbo" not in res.replay.info["images"]["concepts"]
    else:
        assert res.adv_prompts == ["a picture"] * 2
        control = res.replay.info["control"]
        assert control is not None and control["concept"] != "Zorbo" and 0 <= control["detection"] <= 1
        assert res.replay.tensors["reference"].shape == (2, 4, 8, 8)


def test_relearn_deltas_change_the_images(tiny_pipe):
    res = run_attack("relearn", tiny_pipe, "Zorbo", success=_bright, prompts=["a picture of Zorbo"], lr=0.05,
                     **FAST, steps=2, n_images=2)
    from erasekit.generation import generate

    assert not np.array_equal(res.generate(tiny_pipe), generate(tiny_pipe, ["a picture of Zorbo"], [0], steps=2,
                                                                guidance=3.0))


def test_result_saves_replay(tiny_pipe, tmp_path):
    from safetensors.torch import load_file

    res = run_attack("relearn", tiny_pipe, "Zorbo", success=_bright, prompts=["a picture of Zorbo"], **FAST,
                     steps=1, n_images=1)
    res.save(tmp_path)
    loaded = load_file(str(tmp_path / "replay.safetensors"))
    assert set(loaded) == set(res.replay.tensors)
    import json

    saved = json.loads((tmp_path / "result.json").read_text())["replay"]
    assert saved["info"]["steps"] == 1 and set(saved["tensors"]) == set(loaded)


@pytest.mark.parametrize("name,steps", [("concept_inversion", 0), ("concept_inversion", 3), ("relearn", 0),
                                        ("relearn", 3)])
def test_budget_is_respected(tiny_pipe, name, steps):
    res = run_attack(name, tiny_pipe, "Zorbo", success=_bright, prompts=["a picture of Zorbo"], **FAST, steps=steps,
                     n_images=1)
    done = res.logs[0].steps if name == "concept_inversion" else res.replay.info["steps"]
    assert done == steps


def test_user_images_and_time_budget(tiny_pipe, tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)  # resized to 32x32
    np.save(tmp_path / "imgs.npy", arr)
    res = run_attack("concept_inversion", tiny_pipe, "Zorbo", prompts=["a picture of Zorbo"], **FAST, steps=10_000,
                     max_seconds=0.5, n_images=2, images=str(tmp_path / "imgs.npy"))
    info = res.logs[0].extra["images"]
    assert info["source"].startswith("file:") and info["count"] == 2
    assert 1 <= res.logs[0].steps < 10_000


def test_budget_curve(tiny_pipe):
    rows = budget_curve("relearn", tiny_pipe, "Zorbo", [0, 1], key="steps", success=_bright,
                        prompts=["a picture of Zorbo"], n_images=1, **FAST)
    assert [r["budget"] for r in rows] == [0, 1] and all(r["key"] == "steps" for r in rows)
    assert all(0 <= r["post"] <= 1 and r["pre"] == rows[0]["pre"] for r in rows)
    with pytest.raises(UnknownNameError, match="stepz"):
        budget_curve("relearn", tiny_pipe, "Zorbo", [1], key="stepz")
    with pytest.raises(InvalidValueError, match="budgets"):
        budget_curve("relearn", tiny_pipe, "Zorbo", [])


@pytest.mark.parametrize("spec,bad", [
    ("concept_inversion:lr=-1", "lr=-1"),
    ("concept_inversion:n_images=0", "n_images"),
    ("relearn:params=unet", "unet"),
    ("relearn:variant=evil", "evil"),
    ("relearn:rank=0", "rank"),
    ("incontext:strength=1.5", "1.5"),
    ("incontext:strength=0", "strength"),
    ("relearn:images=/no/such/dir", "/no/such/dir"),
    ("relearn:stepz=3", "stepz"),
])
def test_config_errors_name_the_bad_value(spec, bad):
    with pytest.raises((InvalidValueError, UnknownNameError), match=bad.replace("/", ".")):
        parse_spec(spec)


def test_specs_parse():
    assert parse_spec("concept_inversion:steps=2,n_images=3") == ("concept_inversion", {"steps": 2, "n_images": 3})
    assert parse_spec("relearn:variant=benign")[1] == {"variant": "benign"}


def test_incontext_refuses_a_prompt_naming_the_concept(tiny_pipe):
    with pytest.raises(InvalidValueError, match="names the attacked concept"):
        run_attack("incontext", tiny_pipe, "Zorbo", success=_bright, prompts=["Zorbo"], **FAST, n_images=1,
                   neutral_prompt="a picture of zorbo")


def test_unknown_concept_without_images_names_the_fix(tiny_pipe):
    with pytest.raises(InvalidValueError, match="images="):
        run_attack("concept_inversion", tiny_pipe, "a purple unicorn", success=_bright, **FAST, steps=1)


# ------------------------------------------------------------------------------------------------ membership
@pytest.mark.parametrize("scores,labels,want", [
    ([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0], 1.0),
    ([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0], 0.0),
    ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5),
    ([0.9, 0.3, 0.5, 0.1], [1, 1, 0, 0], 0.75),  # pairs (m, n): (.9,.5) (.9,.1) (.3,.1) win, (.3,.5) loses
    ([1.0, 0.5, 0.5, 0.0], [True, True, False, False], 0.875),  # one tie counts 1/2: (3 + 0.5) / 4
])
def test_auc_hand_made(scores, labels, want):
    assert auc(scores, labels) == pytest.approx(want)


def test_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 40).astype(float)  # many ties
    y = rng.random(40) < 0.4
    pos, neg = s[y], s[~y]
    want = ((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (len(pos) * len(neg))
    assert auc(s, y) == pytest.approx(want)


@pytest.mark.parametrize("scores,labels,bad", [
    ([0.1, float("nan")], [1, 0], "NaN"),
    ([0.1, 0.2], [1, 1], "non-members"),
    ([0.1, 0.2, 0.3], [1, 0], "labels 2"),
    ([0.1, 0.2], [2, 0], "labels must be"),
])
def test_auc_refuses(scores, labels, bad):
    with pytest.raises(InvalidValueError, match=bad):
        auc(scores, labels)


def test_membership_scores_and_inference(tiny_pipe):
    assert membership_scores(np.array([1.0, 2.0]), np.array([3.0, 3.0])).tolist() == [2.0, 1.0]
    assert membership_scores(np.array([1.0, 2.0])).tolist() == [-1.0, -2.0]
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    a = denoising_losses(tiny_pipe, imgs, "a picture", timesteps=(100, 500), seed=3)
    assert a.shape == (4,) and np.isfinite(a).all()
    assert np.array_equal(a, denoising_losses(tiny_pipe, imgs, "a picture", timesteps=(100, 500), seed=3))
    # the same model as its own reference scores every image 0: AUC exactly 1/2
    res = membership_inference(tiny_pipe, imgs[:2], imgs[2:], reference_pipe=tiny_pipe, timesteps=(100,))
    assert res.scores == [0.0] * 4 and res.auc == 0.5
    # a "trained" model = the reference with lower loss on the members: AUC 1
    other = copy.deepcopy(tiny_pipe)
    with torch.no_grad():
        for p in other.unet.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    ref = denoising_losses(other, imgs, "", (100,))
    own = denoising_losses(tiny_pipe, imgs, "", (100,))
    scores = membership_scores(own, ref)
    labels = scores > np.median(scores)
    assert auc(scores, labels) == 1.0
    with pytest.raises(InvalidValueError, match="timesteps"):
        denoising_losses(tiny_pipe, imgs, "", (1000,))
    with pytest.raises(InvalidValueError, match="captions"):
        denoising_losses(tiny_pipe, imgs, ["a", "b"], (10,))
