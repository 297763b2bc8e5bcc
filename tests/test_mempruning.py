"""Memorized-subspace pruning (Chavhan et al. 2024, Wanda scores on the UNet FFN) and the Finding Dori embedding
search (Kowalczuk et al. 2025): the pruning mask against an independent re-derivation of the official selection,
its properties, the reversible Edit, and the attack's objective, on the tiny random pipeline (plumbing and algebra;
behaviour on the toy v2 model is measured by bench/memorization_pruning.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erasekit import erase
from erasekit.attacks import run_attack
from erasekit.attacks.finding_dori import FindingDoriConfig, conditional_norm
from erasekit.edits import Edit
from erasekit.erasers.mempruning import MemPruningConfig, ffn_layers
from erasekit.errors import InvalidValueError
from erasekit.memorization import verbatim_copies
from erasekit.sampling import cfg_combine, denoise, encode_prompts

MEM, ORD = ["Zorbo", "gore"], ["Mossy", "a red circle"]
STEPS = 3


def _reference_mask(pipe, target, base, skill_ratio, select_ratio, steps=STEPS, guidance=7.5, which="ffn"):
    """The official selection re-derived by hand: keep every FFN input, then per step and layer sort each row of
    |W| * ||X_col|| (rows normalised, norms over all tokens of all prompts), take the first k, AND target > base,
    count over steps, prune where count > select_ratio * T."""
    layers = ffn_layers(pipe.unet, which)

    def record(prompts):
        seen = {n: [] for n in layers}
        hooks = [m.register_forward_pre_hook(lambda mod, a, n=n: seen[n].append(a[0].detach().clone()))
                 for n, m in layers.items()]
        with torch.no_grad():
            denoise(pipe, [encode_prompts(pipe, [""] * len(prompts)), encode_prompts(pipe, prompts)],
                    cfg_combine(guidance), list(range(len(prompts))), steps=steps)
        for h in hooks:
            h.remove()
        out = {}
        for n, xs in seen.items():  # one tensor per step (B, tokens, inner)
            norms = []
            for x in xs:
                rows = torch.nn.functional.normalize(x.reshape(-1, x.shape[-1]).double(), dim=1)
                norms.append(torch.linalg.vector_norm(rows, dim=0) / len(prompts) ** 0.5)
            out[n] = torch.stack(norms).float()
        return out

    at, ab = record(target), record(base)
    masks = {}
    for n, m in layers.items():
        w = m.weight.detach().abs()
        k = int(skill_ratio * w.shape[1])
        count = torch.zeros_like(w)
        for t in range(steps):
            st, sb = w * at[n][t], w * ab[n][t]
            idx = torch.sort(st, dim=1, descending=True).indices[:, :k]
            top = torch.zeros_like(w).scatter_(1, idx, 1.0)
            count += top * (st > sb).float()
        masks[n] = count > select_ratio * steps
    return masks


def _pruned(edit, pipe, which="ffn"):
    """{layer name: bool mask of the weights the edit sets to zero (that were not zero)}."""
    out = {}
    for n in ffn_layers(pipe.unet, which):
        key = f"unet.{n}.weight"
        base = pipe.unet.get_parameter(f"{n}.weight").detach()
        out[n] = (edit.tensors[key] == 0) & (base != 0) if key in edit.tensors else torch.zeros_like(base, dtype=bool)
    return out


@pytest.mark.parametrize("skill_ratio,select_ratio,which", [(0.1, 0.5, "ffn"), (0.25, 0.0, "ffn"),
                                                             (0.2, 0.5, "attn_kv")])
def test_mask_matches_an_independent_rederivation(tiny_pipe, skill_ratio, select_ratio, which):
    edit = erase(tiny_pipe, "mempruning", erase=MEM, preserve=ORD, steps=STEPS, skill_ratio=skill_ratio,
                 select_ratio=select_ratio, layers=which)
    want = _reference_mask(tiny_pipe, MEM, ORD, skill_ratio, select_ratio, which=which)
    got = _pruned(edit, tiny_pipe, which)
    assert sum(int(m.sum()) for m in want.values()) > 0
    for n in want:
        assert torch.equal(got[n], want[n]), n
    # only the pruned entries change, and only the scored layers' weights are in the edit
    for key, t in edit.tensors.items():
        assert key.endswith(("ff.net.2.weight",) if which == "ffn" else ("attn2.to_k.weight", "attn2.to_v.weight"))
        base = tiny_pipe.unet.get_parameter(key.removeprefix("unet.")).detach()
        changed = t != base
        assert torch.equal(changed, got[key.removeprefix("unet.").removesuffix(".weight")])
    info = edit.manifest["info"]
    assert info["pruned_weights"] == sum(int(m.sum()) for m in want.values())
    assert 0 < info["pruned_fraction"] <= skill_ratio


def test_pruning_properties(tiny_pipe):
    kw = dict(steps=STEPS, select_ratio=0.5)
    # nothing singles out prompts that are the ordinary ones (strict comparison target > base)
    with pytest.raises(InvalidValueError, match="singles out the erase prompts"):
        erase(tiny_pipe, "mempruning", erase=ORD, preserve=ORD, skill_ratio=0.5, select_ratio=0.0, steps=STEPS)
    # a larger candidate share prunes a superset; swapping the roles prunes a disjoint set
    small = _pruned(erase(tiny_pipe, "mempruning", erase=MEM, preserve=ORD, skill_ratio=0.1, **kw), tiny_pipe)
    large = _pruned(erase(tiny_pipe, "mempruning", erase=MEM, preserve=ORD, skill_ratio=0.3, **kw), tiny_pipe)
    swap = _pruned(erase(tiny_pipe, "mempruning", erase=ORD, preserve=MEM, skill_ratio=0.3, **kw), tiny_pipe)
    for n in small:
        assert not (small[n] & ~large[n]).any()
        assert not (large[n] & swap[n]).any()
    assert sum(int(m.sum()) for m in large.values()) > sum(int(m.sum()) for m in small.values())


def test_edit_is_reversible_hashed_and_saved(tiny_pipe, tmp_path):
    edit = erase(tiny_pipe, "mempruning", erase=MEM, preserve=ORD, steps=STEPS, skill_ratio=0.2)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = encode_prompts(tiny_pipe, ["Zorbo"])
    with torch.no_grad():
        before = tiny_pipe.unet(x, 500, encoder_hidden_states=cond).sample
        edit.apply(tiny_pipe)
        pruned = tiny_pipe.unet(x, 500, encoder_hidden_states=cond).sample
        edit.revert(tiny_pipe)
        after = tiny_pipe.unet(x, 500, encoder_hidden_states=cond).sample
    assert not torch.allclose(before, pruned) and torch.equal(before, after)
    again = Edit.load(edit.save(tmp_path / "mem.safetensors"), pipe=tiny_pipe)
    assert again.manifest["edited_sha256"] == edit.manifest["edited_sha256"]
    assert edit.manifest["erase"] == MEM and edit.manifest["preserve"] == ORD and edit.manifest["paper"]


def test_detection_selects_targets_and_bad_inputs(tiny_pipe):
    # the same prompts on both sides: none exceeds the maximum of the others' magnitudes
    with pytest.raises(InvalidValueError, match="detect_quantile"):
        erase(tiny_pipe, "mempruning", erase=ORD, preserve=ORD, steps=2, detect_quantile=1.0)
    e = erase(tiny_pipe, "mempruning", erase=MEM + ORD, preserve=ORD, steps=2, detect_quantile=0.0, skill_ratio=0.2)
    info = e.manifest["info"]
    assert set(info["detected"]) <= set(MEM + ORD) and info["targets"] == len(info["detected"])
    assert all(m > info["detect_threshold"] for p, m in zip(MEM + ORD, info["magnitudes"]) if p in info["detected"])
    with pytest.raises(InvalidValueError, match="preserve"):
        erase(tiny_pipe, "mempruning", erase=MEM, steps=2)
    for bad in ({"skill_ratio": 0.0}, {"select_ratio": 1.0}, {"seeds": 0}, {"branches": "uncond"},
                {"detect_quantile": 2.0}, {"layers": "ff1"}):
        with pytest.raises(InvalidValueError):
            MemPruningConfig(**bad)
    for bad in ({"radius": 0.0}, {"lr": 0.0}, {"noises": 0}, {"objective": "ssim"}):
        with pytest.raises(InvalidValueError):
            FindingDoriConfig(**bad)


def _held_out_magnitude(pipe, emb, steps=STEPS):
    """Mean first-step conditional magnitude of conditioning `emb` (1, 77, D) over 4 fixed starting latents."""
    import copy

    sched = copy.deepcopy(pipe.scheduler)
    sched.set_timesteps(steps)
    t = sched.timesteps[0]
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(123)) * sched.init_noise_sigma
    x = sched.scale_model_input(x, t)
    with torch.no_grad():
        eu = pipe.unet(x, t, encoder_hidden_states=encode_prompts(pipe, [""]).expand(4, -1, -1)).sample
        return float(conditional_norm(pipe, x, t, emb, eu).mean())


def test_finding_dori_raises_the_memorization_signal_within_its_radius(tiny_pipe):
    original = np.full((32, 32, 3), 128, np.uint8)
    refs = np.stack([np.full((32, 32, 3), v, np.uint8) for v in (100, 160)])

    def copies(images):  # a memorization success check: verbatim copy of the "training image"
        return verbatim_copies(images, original, refs)[0]

    r = run_attack("finding_dori", tiny_pipe, "Zorbo", prompts=["Zorbo"], success=copies, sample_steps=STEPS,
                   steps=8, lr=0.05, noises=2, eval_every=4, skip_broken=False, radius=0.2)
    assert r.kind == "embedding" and r.embeddings.shape == (1, 77, tiny_pipe.text_encoder.config.hidden_size)
    e0 = encode_prompts(tiny_pipe, ["Zorbo"])
    rel = float((r.embeddings[0] - e0[0]).norm() / e0.norm())
    assert 0 < rel <= 0.2 + 1e-5 and r.logs[0].extra["relative_distance"] == pytest.approx(rel, rel=1e-4)
    assert _held_out_magnitude(tiny_pipe, r.embeddings[:1]) > _held_out_magnitude(tiny_pipe, e0)
    assert len(r.logs[0].losses) == r.logs[0].steps == 8 and r.post == [bool(copies(r.generate(tiny_pipe))[0])]


def test_finding_dori_denoise_objective_needs_the_base_model(tiny_pipe):
    import copy

    target = copy.deepcopy(tiny_pipe)
    with torch.no_grad():
        for n, p in target.unet.named_parameters():
            if n.endswith("ff.net.2.weight"):
                p.mul_(0.5)
    kw = dict(prompts=["Zorbo"], sample_steps=STEPS, steps=4, noises=2, eval_every=4, skip_broken=False,
              objective="denoise", radius=0.1, success=lambda im: np.zeros(len(im), bool))
    with pytest.raises(InvalidValueError, match="base"):
        run_attack("finding_dori", target, "Zorbo", **kw)
    r = run_attack("finding_dori", target, "Zorbo", base_pipe=tiny_pipe, **kw)
    lg = r.logs[0]
    assert lg.steps == 4 and np.isfinite(lg.losses).all() and lg.extra["objective"] == "denoise"
    assert 0 < lg.extra["relative_distance"] <= 0.1 + 1e-5
