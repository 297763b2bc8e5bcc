"""The visual paraphrase attack (Barman et al. 2024) and PECCAVI (Dixit et al. 2025): plumbing on the tiny random
pipeline, the watermark's maths on numpy images (no model). Toy-model behaviour is measured in BENCHMARKS.md."""

from __future__ import annotations

import numpy as np
import pytest

from erasekit.errors import ErasekitError, InvalidValueError
from erasekit.marks import Key, get_mark, marks
from erasekit.marks.attacks import apply_attack, mark_attacks

SIZE = 32


def smooth_images(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8 smooth gradients with a blob (natural-image-like spectra, not saturated)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        a, b, c = rng.uniform(60, 180, 3)
        cx, cy = rng.uniform(0.2, 0.8, 2)
        blob = 50 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.02)
        img = np.stack([a + 30 * x + blob, b + 30 * y, c + 20 * x * y - blob / 2], axis=-1)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(out)


# ------------------------------------------------------------------------------------------------ paraphrase attack
def test_paraphrase_registered_and_changes_the_image_with_a_prompt():
    from erasekit.testing import tiny_pipeline

    pipe = tiny_pipeline(seed=0)  # world "none": no captioner, the prompt is used
    atk = mark_attacks.get("paraphrase")
    assert atk.needs_pipe and not atk.forgery
    imgs = smooth_images(2)
    out = apply_attack("paraphrase:strength=0.3,prompt=a red ring,steps=10", imgs, pipe=pipe, seed=0)
    assert out.shape == imgs.shape and out.dtype == np.uint8
    assert np.abs(out.astype(float) - imgs).mean() > 1.0
    again = apply_attack("paraphrase:strength=0.3,prompt=a red ring,steps=10", imgs, pipe=pipe, seed=0)
    assert np.array_equal(out, again)  # seeded per image


def test_paraphrase_refuses_without_captioner_or_prompt():
    from erasekit.testing import tiny_pipeline

    with pytest.raises(InvalidValueError, match="no captioner and no prompt") as e:
        apply_attack("paraphrase:steps=4", smooth_images(1), pipe=tiny_pipeline(seed=0))
    assert "\n" not in str(e.value) and "prompt=" in str(e.value)
    with pytest.raises(InvalidValueError, match="pass pipe="):
        apply_attack("paraphrase:prompt=x", smooth_images(1))
    with pytest.raises(InvalidValueError, match="strength"):
        apply_attack("paraphrase:strength=0", smooth_images(1))


def test_paraphrase_uses_the_worlds_captioner(monkeypatch):
    import erasekit.worlds as worlds
    from erasekit.marks.attacks import paraphrase_captions
    from erasekit.testing import tiny_pipeline

    seen = []

    class Captioner:
        name = "stub"

        def caption(self, images):
            seen.append(len(images))
            return [f"caption {i}" for i in range(len(images))]

    monkeypatch.setattr(worlds, "world_of_model", lambda model: Captioner())
    pipe = tiny_pipeline(seed=0)
    assert paraphrase_captions(pipe, smooth_images(3), prompt="ignored") == ["caption 0", "caption 1", "caption 2"]
    apply_attack("paraphrase:steps=4", smooth_images(2), pipe=pipe)
    assert seen == [3, 2]


# ------------------------------------------------------------------------------------------------ peccavi
def test_peccavi_key_round_trip_and_wrong_method(tmp_path):
    wm = get_mark("peccavi")
    assert "peccavi" in marks.names() and wm.kind == "pixel"
    key = wm.keygen(size=SIZE)
    path = key.save(tmp_path / "p.key")
    back = Key.load(path, method="peccavi")
    assert back.fingerprint() == key.fingerprint() and back.shape == (SIZE, SIZE)
    assert np.array_equal(back.tensors["dither"].numpy(), key.tensors["dither"].numpy())
    with pytest.raises(InvalidValueError, match="made for watermark 'peccavi'"):
        Key.load(path, method="dwtdct")
    with pytest.raises(InvalidValueError, match="not 'peccavi'"):
        wm.detect(get_mark("dwtdct").keygen(size=SIZE), smooth_images(1))
    with pytest.raises(InvalidValueError, match="does not match the config"):
        get_mark("peccavi", band=3).detect(key, smooth_images(1))
    assert wm.keygen(size=SIZE).fingerprint() != key.fingerprint()  # fresh randomness


def test_peccavi_marked_detected_clean_and_other_key_not():
    wm = get_mark("peccavi")
    key, other = wm.keygen(size=SIZE), wm.keygen(size=SIZE)
    clean = smooth_images(6)
    marked = wm.embed_images(key, clean)
    psnr = 10 * np.log10(255 ** 2 / ((marked.astype(float) - clean) ** 2).mean())
    assert psnr > 30  # the paper's fidelity bar
    det = wm.detect(key, marked)
    assert det.decision.all() and (det.bit_acc == 1.0).all()
    assert det.rule["statistic"] == "bit matches" and "binomial" in det.rule["source"]
    assert not wm.detect(key, clean).decision.any()
    assert not wm.detect(other, marked).decision.any()
    assert wm.detect(key, clean).bit_acc.mean() < 0.75


def test_peccavi_burnishing_touches_only_the_other_tiles():
    on, off = get_mark("peccavi"), get_mark("peccavi", burnish=False)
    key = on.keygen(size=SIZE)
    clean = smooth_images(3, seed=1)
    nmps = np.array([[0, 3], [1, 2], [3, 0]])
    a, b = on.embed_images(key, clean, nmps=nmps), off.embed_images(key, clean, nmps=nmps)
    p = on.config.patch
    changed = np.abs(a.astype(int) - b).sum(axis=-1).reshape(3, 2, p, 2, p).sum(axis=(2, 4)).reshape(3, 4)
    for i in range(3):
        assert (changed[i, nmps[i]] == 0).all()  # the marked tiles are identical with and without burnishing
        assert (np.delete(changed[i], nmps[i]) > 0).all()  # every decoy tile changed
    untouched = np.abs(b.astype(int) - clean).sum(axis=-1).reshape(3, 2, p, 2, p).sum(axis=(2, 4)).reshape(3, 4)
    assert all((np.delete(untouched[i], nmps[i]) == 0).all() for i in range(3))
    assert on.detect(key, a).decision.all() and off.detect(key, b).decision.all()
    # the detector re-finds the marked tiles among the decoys by the key's lattice alone
    assert (np.sort(on.read(key, a)[1], axis=1) == np.sort(nmps, axis=1)).all()
    # without the key the two marked tiles do not agree modulo the step (independent dithers per tile): comparing
    # tiles does not reveal the NMPs
    slots = on._slots(on._coeffs(a)[1])  # (N, T, S)
    agree = np.cos(2 * np.pi * (slots[np.arange(3), nmps[:, 0]] - slots[np.arange(3), nmps[:, 1]]) / on.config.step)
    assert np.abs(agree.mean(axis=1)).max() < 0.4


@pytest.mark.parametrize("options, match", [
    ({"patch": 1}, "patch"), ({"band": 1}, "band"), ({"band": 20}, "band must be <= patch"),
    ({"channels": (3,)}, "channels"), ({"step": -1.0}, "step"), ({"n_bits": 1000}, "exceeds"),
    ({"nmp": "xrai"}, "nmp"), ({"fpr": 2.0}, "fpr"), ({"burnish": "yes"}, "burnish"),
    ({"nmp_strength": 0.0}, "nmp_strength"),
])
def test_peccavi_bad_config_refused_in_one_line(options, match):
    with pytest.raises(InvalidValueError, match=match) as e:
        get_mark("peccavi", **options)
    assert "\n" not in str(e.value)


def test_peccavi_refusals_at_use():
    wm = get_mark("peccavi", nmp="paraphrase")
    key = wm.keygen(size=SIZE)
    with pytest.raises(InvalidValueError, match="pass pipe="):
        wm.embed_images(key, smooth_images(1))
    with pytest.raises(InvalidValueError, match="fewer than n_nmp"):
        get_mark("peccavi", n_nmp=5).keygen(size=SIZE)
    with pytest.raises(InvalidValueError, match="key was made for 32x32"):
        get_mark("peccavi").detect(key, smooth_images(1, size=64))
    with pytest.raises(ErasekitError, match="pipe= or size="):
        wm.keygen()


def test_peccavi_paraphrase_nmps_through_the_pipeline():
    from erasekit.testing import tiny_pipeline

    pipe = tiny_pipeline(seed=0)
    wm = get_mark("peccavi", nmp="paraphrase", nmp_paraphrases=1, nmp_strength=0.1, nmp_prompt="a red ring")
    imgs = smooth_images(2)
    nmps = wm.locate_nmps(imgs, pipe)
    assert nmps.shape == (2, wm.config.n_nmp) and nmps.min() >= 0 and nmps.max() < 4
    assert all(len(set(r)) == len(r) for r in nmps)
    inst = wm.instability(imgs, pipe)
    assert np.array_equal(np.sort(nmps, axis=1), np.sort(np.argsort(inst, axis=1)[:, :wm.config.n_nmp], axis=1))
    key = wm.keygen(pipe)
    assert wm.detect(key, wm.embed_images(key, imgs, pipe=pipe)).decision.all()
