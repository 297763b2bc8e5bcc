"""Geom-Erasing (erasers/geom_erasing.py), its negative-prompt shield (shields/geom_negative.py) and the toy world's
implicit-mark evaluator (toyworld/mark_eval.py): plumbing on the tiny pipeline, one-line errors, exact negative guidance,
and a behavioural check on the shipped toy model that the geometric tokens bind to the mark."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError, IntegrityError, InvalidValueError, UnknownNameError


def _data(n: int = 16, every: int = 4) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Flat-colour 32x32 images; every `every`-th has a white bottom-right patch (the 'mark')."""
    rng = np.random.default_rng(0)
    images = np.repeat(np.repeat(rng.integers(0, 120, (n, 1, 1, 3)), 32, 1), 32, 2).astype(np.uint8)
    marked = np.arange(n) % every == 0
    images[marked, 24:32, 24:32] = 255
    return images, [f"a red circle number {i}" for i in range(n)], marked


class PatchDetector:
    """A detector with locations: the white patch, box = the bottom-right quarter of the image."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return images[:, 26:30, 26:30].mean(axis=(1, 2, 3)) > 200

    def boxes(self, images: np.ndarray) -> np.ndarray:
        return np.tile([[0.75, 0.75, 1.0, 1.0]], (len(images), 1))


def _erase(pipe, **config):
    from erasekit.erasers import erase
    from erasekit.erasers.geom_erasing import GeomHooks

    images, captions, _ = _data()
    hooks = GeomHooks(detector=config.pop("detector", PatchDetector()), images=config.pop("images", images),
                      captions=config.pop("captions", captions))
    return erase(pipe, "geom_erasing", erase=config.pop("erase", ["mark"]), hooks=hooks,
                 **{"steps": 2, "batch_size": 4, **config})


# ------------------------------------------------------------------------------------------------ the mark evaluator
def test_mark_evaluator_sees_the_stamped_mark_and_where():
    from erasekit.evaluators import get_evaluator
    from erasekit.toyworld.dataset_v2 import mark_present, stamp_mark
    from erasekit.worlds import get_world

    ev = get_evaluator("toyworld-mark")
    plain = get_world("toyworld").images("circle", 6, 0)
    stamped = np.stack([stamp_mark(im) for im in plain])
    images = np.concatenate([plain, stamped])
    truth = mark_present(images)
    assert truth.tolist() == [False] * 6 + [True] * 6
    assert ev.shows(images, "mark").tolist() == truth.tolist()
    assert ev.shows(images, "Watermark").tolist() == truth.tolist()  # an alias
    boxes = ev.boxes(images)
    assert np.isnan(boxes[:6]).all() and np.allclose(boxes[6:], [17 / 32, 26 / 32, 31 / 32, 31 / 32])
    with pytest.raises(UnknownNameError):
        ev.target("circle")
    with pytest.raises(InvalidValueError, match="threshold"):
        get_evaluator("toyworld-mark", threshold=2.0)
    assert ev.identity()["threshold"] == 0.6 and len(ev.identity()["template_sha256"]) == 64


def test_toy_training_set_needs_a_manifest():
    from erasekit.toyworld.mark_eval import captioned_training_images
    from erasekit.worlds import NoWorld, UnsupportedError

    with pytest.raises(InvalidValueError, match="manifest"):
        captioned_training_images(None, 4, 0)
    with pytest.raises(UnsupportedError, match="data=FILE.npz"):
        NoWorld().captioned_images(None, 4, 0)


# ------------------------------------------------------------------------------------------------ geometry
@pytest.mark.parametrize("box, grid, overlap, cells", [
    ((17 / 32, 26 / 32, 31 / 32, 31 / 32), 4, 0.25, [14, 15]),  # the toy mark: bottom row, two right cells
    ((0.0, 0.0, 1.0, 1.0), 2, 0.25, [0, 1, 2, 3]),
    ((0.0, 0.0, 0.1, 0.1), 4, 0.25, [0]),  # too small for any cell: the most covered one
    ((0.5, 0.0, 1.0, 0.5), 2, 1.0, [1]),
    ((np.nan,) * 4, 4, 0.25, []),
])
def test_box_cells(box, grid, overlap, cells):
    from erasekit.erasers.geom_erasing import box_cells

    assert box_cells(np.array([box]), grid, overlap) == [cells]


def test_box_cells_refuses_bad_boxes():
    from erasekit.erasers.geom_erasing import box_cells

    with pytest.raises(InvalidValueError, match="x1 > x0"):
        box_cells(np.array([[0.5, 0.5, 0.2, 0.9]]), 4, 0.25)
    with pytest.raises(InvalidValueError, match=r"\(N, 4\)"):
        box_cells(np.zeros((2, 3)), 4, 0.25)


# ------------------------------------------------------------------------------------------------ plumbing
def test_geom_erasing_plumbing_save_load_apply_revert(tiny_pipe, tmp_path):
    from erasekit.edits import Edit
    from erasekit.erasers.geom_erasing import GeomTokenSet

    before = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    edit = _erase(tiny_pipe, train_method="esd-x")
    assert all(torch.equal(p, before[n]) for n, p in tiny_pipe.unet.named_parameters())  # the pipe is untouched
    assert edit.names and all(n.startswith("unet.") and ".attn2." in n for n in edit.names)
    info = edit.manifest["info"]
    assert info["data"]["detected"] == 4 and info["data"]["with_location"] == 4
    geom = info["geom"]
    assert geom["negative_cells"] == [15] and geom["negative_prompt"] == "<mark> <loc-r3c3>"
    assert len(geom["vectors"]) == 17 and len(geom["vectors"][0]) == 32
    path = edit.save(tmp_path / "g.safetensors")
    tokens = GeomTokenSet.from_edit(path)
    assert torch.equal(tokens.vectors, GeomTokenSet.from_edit(edit).vectors)
    loaded = Edit.load(path, pipe=tiny_pipe)
    with loaded.applied(tiny_pipe):
        assert not all(torch.equal(p, before[n]) for n, p in tiny_pipe.unet.named_parameters())
    assert all(torch.equal(p, before[n]) for n, p in tiny_pipe.unet.named_parameters())  # reverted bit for bit
    from erasekit.erasers import get_eraser

    assert edit.manifest["paper"] and set(edit.manifest["config"]) == {f[0] for f in get_eraser("geom_erasing").options()}


def test_geom_erasing_is_seeded(tiny_pipe):
    a, b, c = _erase(tiny_pipe, steps=1), _erase(tiny_pipe, steps=1), _erase(tiny_pipe, steps=1, seed=1)
    assert a.manifest["edited_sha256"] == b.manifest["edited_sha256"]
    assert a.manifest["info"]["geom"]["vectors_sha256"] == b.manifest["info"]["geom"]["vectors_sha256"]
    assert c.manifest["edited_sha256"] != a.manifest["edited_sha256"]


def test_batches_without_a_tagged_pair_train(tiny_pipe):
    """Regression: a batch with no detected image (here most of them: 1 of 16 detected, the data's own share, batch
    2) left the tokens out of the graph and torch.autograd.grad raised; now their step is skipped."""
    images, captions, _ = _data(every=16)
    edit = _erase(tiny_pipe, images=images, captions=captions, concept_share=-1, batch_size=2, steps=6)
    assert edit.manifest["info"]["data"]["detected"] == 1 and len(edit.manifest["info"]["train"]["losses"]) == 6


def test_control_without_geometric_tokens(tiny_pipe):
    """geometric_tokens=false is the same fine-tuning on plain captions: the tokens are never trained (their learning
    rate changes nothing), whereas with tokens it changes both the tokens and, through them, the UNet."""
    ctl = [_erase(tiny_pipe, geometric_tokens=False, token_lr=lr) for lr in (5e-3, 1.0)]
    geo = [_erase(tiny_pipe, token_lr=lr) for lr in (5e-3, 1.0)]
    assert ctl[0].manifest["info"]["geometric_tokens"] is False and ctl[0].names
    assert ctl[0].manifest["edited_sha256"] == ctl[1].manifest["edited_sha256"]
    assert ctl[0].manifest["info"]["geom"]["vectors_sha256"] == ctl[1].manifest["info"]["geom"]["vectors_sha256"]
    assert geo[0].manifest["info"]["geom"]["vectors_sha256"] != geo[1].manifest["info"]["geom"]["vectors_sha256"]
    assert geo[0].manifest["edited_sha256"] != ctl[0].manifest["edited_sha256"]


# ------------------------------------------------------------------------------------------------ binding options
def test_tokens_before_the_caption_condition_every_caption_position(tiny_pipe):
    """token_position="before": the slots follow BOS, so (causal text encoder) every caption position sees the tokens;
    "after" leaves the caption's positions exactly as the plain prompt encodes them. The option reaches training, the
    recorded token set and the shield's encoding."""
    from erasekit.erasers.geom_erasing import GeomTokenSet, encode_with_tokens, geom_layout
    from erasekit.sampling import encode_prompts

    ids_a, slots_a = geom_layout(tiny_pipe, "a red circle", 2)
    ids_b, slots_b = geom_layout(tiny_pipe, "a red circle", 2, "before")
    n = len(tiny_pipe.tokenizer("a red circle", add_special_tokens=False).input_ids)
    assert slots_a.tolist() == [1 + n, 2 + n] and slots_b.tolist() == [1, 2]
    assert ids_b[3:3 + n].tolist() == ids_a[1:1 + n].tolist()
    v = torch.randn(5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = encode_prompts(tiny_pipe, ["a red circle"])
        after = encode_with_tokens(tiny_pipe, ["a red circle"], [[0, 1]], v)
        before = encode_with_tokens(tiny_pipe, ["a red circle"], [[0, 1]], v, "before")
    assert torch.allclose(after[0, :1 + n], plain[0, :1 + n], atol=1e-5)
    assert (before[0, 3:3 + n] - plain[0, 1:1 + n]).abs().max() > 1e-3
    a, b = _erase(tiny_pipe), _erase(tiny_pipe, token_position="before")
    assert a.manifest["edited_sha256"] != b.manifest["edited_sha256"]
    tokens = GeomTokenSet.from_edit(b)
    assert tokens.position == "before" and GeomTokenSet.from_edit(a).position == "after"
    old = dict(a.manifest["info"]["geom"])
    del old["position"]  # an edit made before the option reads as "after"
    assert GeomTokenSet.from_info(old).position == "after"


def test_shield_encodes_the_negative_at_the_trained_position(tiny_pipe):
    from erasekit.erasers.geom_erasing import GeomTokenSet, encode_with_tokens
    from erasekit.shields import Plan, get_shield

    v = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    got = {}
    for pos in ("after", "before"):
        shield = get_shield("geom_negative", tokens=GeomTokenSet("mark", 2, v, (1,), pos))
        plan = Plan(prompts=["a red circle"], cond=torch.zeros(1, 77, 32), negative=["blurry"], steps=4, guidance=5.0)
        plan, _ = shield.condition(tiny_pipe, plan)
        got[pos] = plan.terms[-1].conds[0]
        with torch.no_grad():
            want = encode_with_tokens(tiny_pipe, ["blurry"], [[0, 2]], v, pos)
        assert torch.allclose(got[pos], want)
    assert (got["after"] - got["before"]).abs().max() > 1e-3


def test_kv_lr_is_the_cross_attention_kv_learning_rate(tiny_pipe):
    """One Adam step moves every parameter by ~lr: with kv_lr the attn2 to_k/to_v tensors move by kv_lr, the rest as
    before (bit-identical after one step)."""
    base = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    a = _erase(tiny_pipe, steps=1, lr=1e-4)
    b = _erase(tiny_pipe, steps=1, lr=1e-4, kv_lr=1e-2)
    kv = [n for n in a.names if ".attn2.to_k." in n or ".attn2.to_v." in n]
    assert kv and len(kv) < len(a.names)
    for n in a.names:
        step_a = (a.tensors[n].float() - base[n[5:]].float()).abs().max().item()
        step_b = (b.tensors[n].float() - base[n[5:]].float()).abs().max().item()
        if n in kv:
            assert step_b > 20 * step_a, (n, step_a, step_b)
        else:
            assert torch.equal(a.tensors[n], b.tensors[n]), n
    with pytest.raises(InvalidValueError, match="kv_lr"):
        _erase(tiny_pipe, steps=1, kv_lr=1e-3, train_method="esd-u")


def test_text_encoder_lr_trains_the_text_encoder(tiny_pipe):
    """text_encoder_lr > 0: the edit also holds the text encoder's layers (not its token table), and applying it
    changes how prompts encode; by default the text encoder is untouched."""
    from erasekit.sampling import encode_prompts

    a, b = _erase(tiny_pipe), _erase(tiny_pipe, text_encoder_lr=1e-3)
    assert not any(n.startswith("text_encoder.") for n in a.names)
    te = [n for n in b.names if n.startswith("text_encoder.")]
    assert te and not any("token_embedding" in n for n in te)
    assert any(".encoder.layers." in n or n.startswith("text_encoder.encoder.") for n in te)
    with torch.no_grad():
        before = encode_prompts(tiny_pipe, ["a red circle"])
        with b.applied(tiny_pipe):
            after = encode_prompts(tiny_pipe, ["a red circle"])
    assert (after - before).abs().max() > 1e-4
    assert torch.equal(encode_prompts(tiny_pipe, ["a red circle"]), before)  # reverted


def test_tagged_dropout_keeps_the_tokens_in_training(tiny_pipe):
    """With caption_dropout 0.99 every tagged pair is dropped, so the tokens never train (their lr is irrelevant);
    tagged_dropout=0 keeps the detected pairs' captions and tokens, so the tokens do train."""
    def vec(**kw):
        return _erase(tiny_pipe, caption_dropout=0.99, concept_share=1.0, **kw).manifest["info"]["geom"][
            "vectors_sha256"]

    assert vec(token_lr=5e-3) == vec(token_lr=1.0)
    assert vec(token_lr=5e-3, tagged_dropout=0.0) != vec(token_lr=1.0, tagged_dropout=0.0)


def test_box_loss_weight(tiny_pipe):
    from erasekit.erasers.geom_erasing import box_weights

    w = box_weights([[15], [], [0, 1]], np.array([True, False, True]), 4, (8, 8), 3.0)
    assert w.shape == (3, 8, 8) and torch.allclose(w.mean((1, 2)), torch.ones(3))
    assert w[0, 6:, 6:].unique().numel() == 1 and w[0, 6, 6] > 2 * w[0, 0, 0]  # the cell (3, 3) is weighted up
    assert torch.equal(w[1], torch.ones(8, 8)) and w[2, 0, 0] > w[2, 4, 4]
    assert torch.equal(box_weights([[15]], np.array([True]), 4, (8, 8), 1.0), torch.ones(1, 8, 8))
    a, b = _erase(tiny_pipe), _erase(tiny_pipe, box_loss_weight=4.0)
    assert a.manifest["edited_sha256"] != b.manifest["edited_sha256"]


def test_shield_is_exact_negative_guidance(tiny_pipe):
    """eps = eps(neg) + w (eps(c) - eps(neg)) with neg = the geometric tokens, through the shield's guidance term."""
    from erasekit.erasers.geom_erasing import GeomTokenSet, encode_with_tokens
    from erasekit.sampling import cfg_combine, decode, denoise, encode_prompts
    from erasekit.shields import get_shield, shielded_generate

    g = torch.Generator().manual_seed(0)
    tokens = GeomTokenSet("mark", 2, torch.randn(5, 32, generator=g), (1, 3))
    prompts, seeds = ["a red circle", "a blue square"], [3, 4]
    shield = get_shield("geom_negative", tokens=tokens)
    got, _ = shielded_generate(tiny_pipe, prompts, seeds, shields=shield, steps=4, guidance=5.0)
    with torch.no_grad():
        neg = encode_with_tokens(tiny_pipe, ["", ""], [[0, 2, 4]] * 2, tokens.vectors)
        want = decode(tiny_pipe, denoise(tiny_pipe, [neg, encode_prompts(tiny_pipe, prompts)], cfg_combine(5.0),
                                         seeds, steps=4))
        plain = decode(tiny_pipe, denoise(tiny_pipe, [encode_prompts(tiny_pipe, ["", ""]),
                                                      encode_prompts(tiny_pipe, prompts)], cfg_combine(5.0), seeds,
                                          steps=4))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1
    assert np.abs(got.astype(int) - plain.astype(int)).max() > 1  # the negative does change the images
    assert shield.identity()["negative_prompt"] == "<mark> <loc-r0c1> <loc-r1c1>"


# ------------------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("options, match", [
    ({"grid": 0}, "grid must be >= 1"),
    ({"min_overlap": 0.0}, "min_overlap must be in"),
    ({"concept_share": 2.0}, "concept_share must be in"),
    ({"caption_dropout": 1.0}, "caption_dropout must be in"),
    ({"data": "pairs.txt"}, "must be a .npz"),
    ({"train_method": "esd-q"}, "train_method='esd-q' is not one of"),
    ({"negative_share": 1.5}, "negative_share must be in"),
    ({"token_position": "middle"}, "token_position='middle' is not one of"),
    ({"kv_lr": -1.0}, "kv_lr must be >= 0"),
    ({"text_encoder_lr": -1e-4}, "text_encoder_lr must be >= 0"),
    ({"tagged_dropout": 1.0}, "tagged_dropout must be in"),
    ({"box_loss_weight": 0.0}, "box_loss_weight must be > 0"),
])
def test_bad_config_is_one_line(options, match):
    from erasekit.erasers.geom_erasing import GeomErasingConfig

    with pytest.raises(InvalidValueError, match=match) as e:
        GeomErasingConfig(**options)
    assert "\n" not in str(e.value)


def test_bad_inputs_are_one_line(tiny_pipe, tmp_path):
    from erasekit.erasers import erase
    from erasekit.shields import get_shield

    images, captions, _ = _data()
    cases = [
        (lambda: erase(tiny_pipe, "geom_erasing", erase=["mark"], steps=1), "needs a detector of 'mark'"),
        (lambda: _erase(tiny_pipe, detector=lambda im: np.zeros(len(im), bool)), "found 'mark' in none"),
        (lambda: _erase(tiny_pipe, captions=captions[:3]), "16 images and 3 captions"),
        (lambda: _erase(tiny_pipe, erase=["mark", "logo"]), "one implicit concept per run"),
        (lambda: _erase(tiny_pipe, detector=lambda im: np.ones(3, bool)), "returned (3,) flags"),
        (lambda: _erase(tiny_pipe, detector="not a detector"), "must be an Evaluator or a callable"),
        (lambda: erase(tiny_pipe, "geom_erasing", erase=["mark"], detector="toyworld-mark",
                       data=str(tmp_path / "x.npz")), "no such .npz"),
        (lambda: erase(tiny_pipe, "geom_erasing", erase=["mark"], detector="toyworld-oracle"),
         "unknown concept 'mark'"),
        (lambda: get_shield("geom_negative"), "exactly one source of tokens"),
        (lambda: get_shield("geom_negative:cells=some"), "cells='some' is not one of"),
    ]
    for fn, match in cases:
        with pytest.raises(ErasekitError, match=match.replace("(", r"\(").replace(")", r"\)")) as e:
            fn()
        assert "\n" not in str(e.value), str(e.value)


def test_tampered_or_foreign_tokens_are_refused(tiny_pipe):
    from erasekit.edits import Edit
    from erasekit.erasers.geom_erasing import GeomTokenSet
    from erasekit.shields import get_shield, shielded_generate
    from erasekit.testing import tiny_pipeline

    edit = _erase(tiny_pipe, steps=1, train_method="esd-x-strict")
    edit.manifest["info"]["geom"]["vectors"][0][0] += 1.0
    with pytest.raises(IntegrityError, match="sha256"):
        GeomTokenSet.from_edit(edit)
    with pytest.raises(InvalidValueError, match="holds no geometric tokens"):
        GeomTokenSet.from_edit(Edit.from_tensors(tiny_pipe, {"unet.conv_in.bias": tiny_pipe.unet.conv_in.bias + 1},
                                                 method="x"))
    tokens = GeomTokenSet("mark", 1, torch.zeros(2, 64), (0,))
    other = tiny_pipeline(0, cross_attention_dim=32)
    with pytest.raises(InvalidValueError, match="64-dimensional"):
        shielded_generate(other, ["a"], [0], shields=get_shield("geom_negative", tokens=tokens), steps=2,
                          guidance=3.0)


# ------------------------------------------------------------------------------------------------ behaviour
def test_geometric_tokens_bind_to_the_mark(toy_pipe):
    """On the shipped toy model fine-tuned on images half of which carry the toy mark (the same captions for both):
    with the geometric tokens appended, the denoising error in the mark's latent cells of the marked images falls
    clearly below the plain captions' (the tokens carry the mark; without them the two would be equal)."""
    import torch.nn.functional as F

    from erasekit.erasers import erase
    from erasekit.erasers.fewshot import encode_latents
    from erasekit.erasers.geom_erasing import GeomHooks, GeomTokenSet, encode_with_tokens
    from erasekit.sampling import encode_prompts
    from erasekit.toyworld.dataset_v2 import stamp_mark
    from erasekit.worlds import get_world

    objects = ("circle", "square", "triangle", "cross")
    images = np.concatenate([get_world("toyworld").images(o, 8, 0) for o in objects])
    captions = [f"a {o}" for o in objects for _ in range(8)]
    marked = np.arange(32) % 2 == 0
    images[marked] = np.stack([stamp_mark(im) for im in images[marked]])
    edit = erase(toy_pipe, "geom_erasing", erase=["mark"], detector="toyworld-mark", steps=30,
                 train_method="esd-x", caption_dropout=0.0,
                 hooks=GeomHooks(images=images, captions=captions))
    tokens = GeomTokenSet.from_edit(edit)
    assert tokens.negative_cells == (14, 15)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad(), edit.applied(toy_pipe):
        lat = encode_latents(toy_pipe, images[marked], g, flip=False).repeat(2, 1, 1, 1)
        caps = [captions[i] for i in np.flatnonzero(marked)] * 2
        eps = torch.randn(lat.shape, generator=g)
        t = torch.full((len(lat),), 500)
        x = toy_pipe.scheduler.add_noise(lat, eps, t)
        errors = []
        for cond in (encode_prompts(toy_pipe, caps),
                     encode_with_tokens(toy_pipe, caps, [tokens.rows()] * len(caps), tokens.vectors)):
            pred = toy_pipe.unet(x, t, encoder_hidden_states=cond).sample
            errors.append(F.mse_loss(pred[..., 3, 2:4], eps[..., 3, 2:4]).item())  # the mark's latent cells
    plain, tagged = errors
    assert tagged < 0.9 * plain, errors
