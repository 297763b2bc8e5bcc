"""erasekit.marks: keys, Tree-Ring, Gaussian Shading, DWT-DCT, attacks, metrics, bench and CLI (plumbing on tiny
random pipelines; exact-latent checks prove the embed/decode maths; toy-model behaviour is measured in
BENCHMARKS.md, not here)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError, InvalidValueError
from erasekit.marks import Key, auc, binomial_threshold, get_mark, marks, tpr_at_fpr
from erasekit.marks.attacks import apply_attack, average_forgery, mark_attacks, parse_attack

LATENT = ("tree_ring", "gaussian_shading")


def smooth_images(n: int, size: int = 32, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth colour gradients with a blob (natural-image-like spectra)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(40, 200, 3)
        cx, cy = rng.uniform(0.3, 0.7, 2)
        blob = 60 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
        img = np.stack([a + 40 * x + blob, b + 40 * y, c + 30 * x * y - blob / 2], axis=-1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


# ------------------------------------------------------------------------------------------------ keys
@pytest.mark.parametrize("name", ["tree_ring", "gaussian_shading", "dwtdct"])
def test_key_round_trip_and_wrong_method(tmp_path, tiny_pipe, name):
    wm = get_mark(name)
    key = wm.keygen(tiny_pipe)
    path = key.save(tmp_path / "k.key")
    back = Key.load(path, method=name)
    assert back.fingerprint() == key.fingerprint() and back.shape == key.shape
    with pytest.raises(ErasekitError, match="pass --overwrite"):
        key.save(path)
    other = "dwtdct" if name != "dwtdct" else "tree_ring"
    with pytest.raises(InvalidValueError, match=f"made for watermark '{name}'"):
        Key.load(path, method=other)
    with pytest.raises(InvalidValueError, match="made for watermark"):
        get_mark(other).check_key(back)
    assert wm.keygen(tiny_pipe).fingerprint() != key.fingerprint()  # fresh entropy every time


def test_key_file_errors(tmp_path):
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"not a key")
    with pytest.raises(InvalidValueError, match="not an erasekit watermark key"):
        Key.load(bad)
    with pytest.raises(InvalidValueError, match="does not exist"):
        Key.load(tmp_path / "missing.key")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InvalidValueError, match="no 'erasekit_mark' metadata"):
        Key.load(tmp_path / "plain.safetensors")


def test_registry_and_config_errors():
    assert {"tree_ring", "gaussian_shading", "dwtdct"} <= set(marks.names())
    with pytest.raises(ErasekitError, match="Did you mean"):
        get_mark("tree_rings")
    with pytest.raises(InvalidValueError, match="pattern"):
        get_mark("tree_ring:pattern=spiral")
    with pytest.raises(InvalidValueError, match="fpr"):
        get_mark("gaussian_shading", fpr=1.5)
    with pytest.raises(ErasekitError, match="option"):
        get_mark("dwtdct:scales=3")
    assert get_mark("tree_ring:radius=3").config.radius == 3


# ------------------------------------------------------------------------------------------------ exact latents
def test_gaussian_shading_exact_latents_bit_accuracy_one(tiny_pipe):
    gs = get_mark("gaussian_shading")
    key, other = gs.keygen(tiny_pipe, entropy=b"a"), gs.keygen(tiny_pipe, entropy=b"b")
    seeds = list(range(6))
    z = gs.initial_latents(key, seeds)
    ref = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in seeds])
    assert torch.equal(z.abs(), ref.abs())  # same-seed magnitudes, signs from the encrypted message
    det = gs.score_latents(key, z)
    assert np.all(det.bit_acc == 1.0) and det.decision.all()
    assert det.rule["n_bits"] == 64 and key.config["hw_copy"] == 2
    wrong = gs.score_latents(other, z)
    assert not wrong.decision.any() and wrong.bit_acc.mean() < 0.75
    clean = gs.score_latents(key, ref)
    assert not clean.decision.any()
    idx, scores = gs.identify([other, key], None, latents=z)
    assert (idx == 1).all() and scores.shape == (6, 2)
    traced, _ = gs.trace([other, key], None, latents=z)
    assert (traced == 1).all()
    assert (gs.trace([other], None, latents=ref)[0] == -1).all()  # unmarked: traced to nobody


def test_gaussian_shading_signs_are_balanced_and_keyed(tiny_pipe):
    gs = get_mark("gaussian_shading")
    k1, k2 = gs.keygen(tiny_pipe, entropy=b"x"), gs.keygen(tiny_pipe, entropy=b"y")
    s1, s2 = gs.signs(k1), gs.signs(k2)
    assert 0.3 < s1.mean() < 0.7 and (s1 != s2).mean() > 0.3  # the keystream whitens the tiled message


def test_tree_ring_exact_latents(tiny_pipe):
    from erasekit.marks.tree_ring import default_radius

    assert default_radius(8) == 2 and default_radius(64) == 10
    tr = get_mark("tree_ring")
    key = tr.keygen(tiny_pipe, entropy=b"k")
    assert key.config["radius"] == 2 and key.tensors["mask"][3].sum() == 13 and key.tensors["mask"][:3].sum() == 0
    z = tr.initial_latents(key, [0, 1, 2, 3])
    clean = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in range(4)])
    assert torch.equal(z[:, :3], clean[:, :3])  # only the keyed channel changes
    dm, dc = tr.score_latents(key, z), tr.score_latents(key, clean)
    assert dm.decision.all() and (dm.p_value < 1e-4).all()
    assert (dm.score > dc.score).all()
    with pytest.raises(InvalidValueError, match="channel=5"):
        get_mark("tree_ring", channel=5).keygen(tiny_pipe)
    with pytest.raises(InvalidValueError, match="does not fit"):
        get_mark("tree_ring", radius=6).keygen(tiny_pipe)


# ------------------------------------------------------------------------------------------------ generation plumbing
@pytest.mark.parametrize("name", LATENT)
def test_latent_generate_detect_plumbing(tiny_pipe, name):
    wm = get_mark(name, inversion_steps=2)
    key = wm.keygen(tiny_pipe)
    imgs = wm.generate(tiny_pipe, key, ["a red ring", "Zorbo"], [0, 1], steps=2, guidance=3.0)
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == np.uint8
    det = wm.detect(key, imgs, pipe=tiny_pipe)
    assert det.score.shape == (2,) and det.decision.dtype == bool and det.p_value.shape == (2,)
    assert np.isfinite(det.score).all() and "marked_if" in det.rule
    json.dumps(det.to_dict(), allow_nan=False)
    with pytest.raises(ErasekitError, match="pass pipe="):
        wm.detect(key, imgs)
    with pytest.raises(InvalidValueError, match="made for 32x32"):
        wm.detect(key, np.zeros((1, 64, 64, 3), np.uint8), pipe=tiny_pipe)
    with pytest.raises(InvalidValueError, match="uint8"):
        wm.detect(key, imgs.astype(np.float32), pipe=tiny_pipe)
    with pytest.raises(InvalidValueError, match="RGB images"):
        wm.detect(key, "photo.png", pipe=tiny_pipe)
    small = wm.keygen(shape=(4, 16, 16))
    with pytest.raises(InvalidValueError, match="latents but the pipeline"):
        wm.generate(tiny_pipe, small, ["a"], [0], steps=2)


# ------------------------------------------------------------------------------------------------ DWT-DCT
def test_dwtdct_round_trip_and_errors():
    wm = get_mark("dwtdct")
    key = wm.keygen(size=32, entropy=b"d")
    assert key.tensors["message"].numel() == wm.capacity(32, 32) == 32
    imgs = smooth_images(6)
    marked = wm.embed_images(key, imgs)
    assert marked.shape == imgs.shape and marked.dtype == np.uint8
    assert 0 < np.abs(marked.astype(float) - imgs).mean() < 6
    dm, dc = wm.detect(key, marked), wm.detect(key, imgs)
    assert dm.decision.all() and dm.bit_acc.min() >= 30 / 32
    assert not dc.decision.any()
    with pytest.raises(InvalidValueError, match="made for 32x32"):
        wm.detect(key, smooth_images(1, size=64))
    with pytest.raises(InvalidValueError, match="exceeds the capacity"):
        get_mark("dwtdct", n_bits=100).keygen(size=32)
    assert get_mark("dwtdct").keygen(size=256).tensors["message"].numel() == 2048


# ------------------------------------------------------------------------------------------------ attacks
FAST_ATTACKS = ["jpeg:quality=30", "crop:scale=0.6", "rotate:degrees=30", "blur:sigma=1.5", "noise:std=0.1",
                "brightness:factor=1.4", "contrast:factor=0.7", "jpeg:quality=50+blur:sigma=1"]


@pytest.mark.parametrize("spec", FAST_ATTACKS)
def test_pixel_attacks_keep_shape_and_change_images(spec):
    imgs = smooth_images(3)
    out = apply_attack(spec, imgs, seed=1)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - imgs).mean() > 0.2
    assert np.array_equal(out, apply_attack(spec, imgs, seed=1))  # deterministic in the seed


def test_regeneration_attacks_plumbing(tiny_pipe):
    imgs = smooth_images(2)
    for spec in ("vae", "img2img:strength=0.5,steps=2"):
        out = apply_attack(spec, imgs, pipe=tiny_pipe, seed=0)
        assert out.shape == imgs.shape and out.dtype == np.uint8
    with pytest.raises(InvalidValueError, match="pass pipe="):
        apply_attack("vae", imgs)


def test_attack_specs_and_errors():
    assert parse_attack("none") == []
    chain = parse_attack("jpeg:quality=50+blur:sigma=1")
    assert [a.name for a, _ in chain] == ["jpeg", "blur"] and chain[0][1].quality == 50
    assert set(mark_attacks.names()) >= {"jpeg", "crop", "rotate", "blur", "noise", "brightness", "contrast", "vae",
                                         "img2img"}
    with pytest.raises(InvalidValueError, match="quality"):
        parse_attack("jpeg:quality=0")
    with pytest.raises(ErasekitError, match="Did you mean"):
        parse_attack("jpg:quality=50")
    with pytest.raises(InvalidValueError, match="empty attack"):
        parse_attack("jpeg+")
    imgs = smooth_images(2)
    n1, n2 = apply_attack("noise:std=0.1", imgs, seed=0), apply_attack("noise:std=0.1", imgs, seed=1)
    assert not np.array_equal(n1, n2)


def test_average_forgery_stamps_the_mean_pattern():
    rng = np.random.default_rng(0)
    pattern = rng.integers(-20, 20, (32, 32, 3))
    clean = smooth_images(8)
    marked = np.clip(smooth_images(8, seed=1).astype(int) + pattern, 0, 255).astype(np.uint8)
    forged = average_forgery(marked, smooth_images(8, seed=1), clean)
    assert forged.shape == clean.shape and forged.dtype == np.uint8
    est = forged.astype(float) - clean
    assert np.corrcoef(est.ravel(), np.broadcast_to(pattern, est.shape).ravel())[0, 1] > 0.9
    with pytest.raises(InvalidValueError, match="differ in size"):
        average_forgery(marked, smooth_images(2, size=16), clean)


# ------------------------------------------------------------------------------------------------ metrics
def test_tpr_auc_on_hand_made_scores():
    neg = np.arange(100) / 100.0  # 0.00 .. 0.99
    assert tpr_at_fpr(neg, [2.0, 3.0], 0.01) == 1.0
    assert auc(neg, [2.0, 3.0]) == 1.0
    pos = np.array([0.995, 0.985, 0.5, 0.1])
    assert tpr_at_fpr(neg, pos, 0.01) == 0.5  # one clean score (0.99) may pass at 1%: threshold 0.985
    assert tpr_at_fpr(neg, pos, 0.001) == 0.25  # 0 false positives: threshold above 0.99
    assert auc(neg, neg) == 0.5 and auc([1.0], [0.0]) == 0.0
    assert tpr_at_fpr([0.0, 1.0], [0.5], 0.5) == 1.0
    with pytest.raises(InvalidValueError, match="NaN"):
        auc([np.nan], [1.0])
    with pytest.raises(InvalidValueError, match="need scores"):
        tpr_at_fpr([], [1.0], 0.01)


def test_binomial_threshold_matches_brute_force():
    for n, fpr in [(64, 1e-6), (32, 1e-6), (16, 1e-3), (256, 1e-6)]:
        k = binomial_threshold(n, fpr)
        tail = lambda j: sum(math.comb(n, i) for i in range(j, n + 1)) / 2 ** n  # noqa: E731
        assert tail(k) <= fpr < tail(k - 1)
    assert binomial_threshold(16, 1e-6) == 17  # 16 bits cannot reach 1e-6


# ------------------------------------------------------------------------------------------------ bench + CLI
def test_bench_plumbing(tiny_pipe, tmp_path):
    from erasekit.marks.bench import markdown, run_bench, write_results

    res = run_bench(tiny_pipe, methods=["gaussian_shading:inversion_steps=2", "dwtdct"], attacks=["none", "jpeg"],
                    n=4, n_keys=2, prompts=["a red ring"] * 4)
    assert len(res["rows"]) == 4 and {r["method"] for r in res["rows"]} == {"gaussian_shading:inversion_steps=2",
                                                                           "dwtdct"}
    dwt = [r for r in res["rows"] if r["method"] == "dwtdct" and r["attack"] == "none"][0]
    assert dwt["tpr_rule"] == 1.0 and dwt["fpr_rule"] == 0.0 and dwt["ident_acc"] == 1.0
    js, md = write_results(res, tmp_path)
    json.loads(js.read_text())
    assert "| dwtdct | none |" in markdown(res)


def test_cli_keygen_embed_detect(tmp_path):
    from click.testing import CliRunner
    from PIL import Image

    from erasekit.cli import main

    r = CliRunner()
    key = tmp_path / "px.key"
    res = r.invoke(main, ["mark", "keygen", "--method", "dwtdct", "--out", str(key)])
    assert res.exit_code == 0, res.output
    src = tmp_path / "in.png"
    Image.fromarray(smooth_images(1)[0]).save(src)
    out = tmp_path / "marked.png"
    res = r.invoke(main, ["mark", "embed", "--key", str(key), "--images", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["mark", "detect", "--key", str(key), "--images", str(out), "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["decision"] == [True]
    res = r.invoke(main, ["mark", "detect", "--key", str(key), "--images", str(src), "--json"])
    assert json.loads(res.output)["decision"] == [False]
    res = r.invoke(main, ["mark", "detect", "--key", str(src), "--images", str(out)])
    assert res.exit_code == 2 and "not an erasekit watermark key" in res.output
    res = r.invoke(main, ["mark", "attack", "--attack", "jpeg:quality=40", "--images", str(out), "--out",
                          str(tmp_path / "att.png")])
    assert res.exit_code == 0, res.output
    res = r.invoke(main, ["mark", "embed", "--key", str(key), "--images", str(src), "--out", str(out)])
    assert res.exit_code == 2 and "--overwrite" in res.output


def test_gaussian_shading_correlation_statistic(tiny_pipe):
    gs = get_mark("gaussian_shading", statistic="correlation")
    key = gs.keygen(tiny_pipe, entropy=b"c")
    z = gs.initial_latents(key, list(range(4)))
    det = gs.score_latents(key, z)
    assert det.decision.all() and (det.score > 10).all() and (det.bit_acc == 1.0).all()
    clean = torch.randn((200, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    t = gs.score_latents(key, clean).score
    assert abs(t.mean()) < 0.25 and 0.8 < t.std() < 1.2  # N(0, 1) under the null


def test_cli_bench_passes_guidance_and_forgeries(tmp_path, monkeypatch):
    """`erasekit mark bench --guidance G --forgery SPEC` reaches run_bench (checked with a stand-in that records its
    arguments; the model is loaded but nothing is generated)."""
    from click.testing import CliRunner

    import erasekit.marks.bench as bench_mod
    from erasekit.cli import main

    seen = {}

    def fake_run_bench(pipe, methods, attacks, **kw):
        seen.update(kw)
        return {"rows": [], "forgeries": [], "pipeline": {}}

    monkeypatch.setattr(bench_mod, "run_bench", fake_run_bench)
    monkeypatch.setattr(bench_mod, "write_results", lambda res, out: (out / "r.json", _write(out / "t.md", "T")))
    res = CliRunner().invoke(main, ["mark", "bench", "--guidance", "2", "--forgery", "reprompt:prompt=Zorbo",
                                    "--forgery", "imprint:steps=5", "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    assert seen["guidance"] == 2.0 and seen["forgeries"] == ["reprompt:prompt=Zorbo", "imprint:steps=5"]


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
