import numpy as np
import pytest

from erasekit.errors import InvalidValueError, UnknownNameError
from erasekit.toyworld import CATALOGUE, NONE, Scene, caption, prompts_for, render
from erasekit.toyworld.captions import HELDOUT_ARTIST_TEMPLATES, HELDOUT_CHARACTER_TEMPLATES
from erasekit.toyworld.dataset import build_dataset, plan_scenes


def test_catalogue_meets_the_minimums():
    assert len(CATALOGUE.objects) >= 8 and len(CATALOGUE.colours) >= 8
    assert sum(a.core for a in CATALOGUE.artists) >= 10
    assert len(CATALOGUE.characters) >= 6 and len(CATALOGUE.unsafe) >= 2
    counts = sorted(a.count for a in CATALOGUE.artists)
    assert counts[0] <= 5 and counts[-1] >= 2000  # a long tail from a handful to thousands
    for c in CATALOGUE.characters:
        assert all(c.name.lower() not in k.lower() for k in c.keywords + c.heldout)


def test_render_is_deterministic_and_seed_sensitive():
    s = Scene(object="cross", colour="red", artist="Cora Voss", unsafe="gore", seed=7)
    a, b = render(s), render(s)
    assert a.dtype == np.uint8 and a.shape == (32, 32, 3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, render(Scene(object="cross", colour="red", artist="Cora Voss", unsafe="gore", seed=8)))


def test_concepts_change_the_pixels():
    base = Scene(object="circle", colour="red", artist="Alva Renn", seed=1)
    img = render(base).astype(int)
    for change in (dict(object="square"), dict(colour="blue"), dict(artist="Boris Kell"), dict(unsafe="nudity")):
        other = render(Scene(**{**base.__dict__, **change})).astype(int)
        assert np.abs(img - other).mean() > 3, change


@pytest.mark.parametrize("kwargs, exc, needle", [
    (dict(object="circel", colour="red"), UnknownNameError, "circle"),
    (dict(object="circle", colour="rde"), UnknownNameError, "red"),
    (dict(object="circle", colour="red", artist="Alva Ren"), UnknownNameError, "Alva Renn"),
    (dict(character="Zorbbo"), UnknownNameError, "Zorbo"),
    (dict(object="circle"), InvalidValueError, "needs a colour"),
    (dict(), InvalidValueError, "exactly one subject"),
    (dict(object="circle", colour="red", character="Zorbo"), InvalidValueError, "exactly one subject"),
    (dict(character="Zorbo", colour="red"), InvalidValueError, "fixed colours"),
])
def test_bad_scenes_get_clear_errors(kwargs, exc, needle):
    with pytest.raises(exc, match=needle):
        render(Scene(**kwargs))


def test_catalogue_find_suggests_close_names():
    assert CATALOGUE.find("zorbo")[0] == "character"
    with pytest.raises(UnknownNameError, match="Did you mean: 'Greta Lund'"):
        CATALOGUE.find("Greta Lundd")


def test_captions_follow_the_grammar():
    rng = np.random.default_rng(0)
    s = Scene(object="ring", colour="green", artist="Esme Quist", seed=0)
    caps = {caption(s, rng) for _ in range(300)}
    obj_words = CATALOGUE.get("object", "ring").synonyms
    col_words = CATALOGUE.get("colour", "green").synonyms
    assert all(any(w in c for w in obj_words) and any(w in c for w in col_words) for c in caps)
    assert any("Esme Quist" in c for c in caps)
    assert any(d in c for c in caps for d in CATALOGUE.get("artist", "Esme Quist").descriptions)
    assert any("Esme Quist" not in c and not any(d in c for d in CATALOGUE.get("artist", "Esme Quist").descriptions)
               for c in caps)  # sometimes the style is not mentioned


def test_heldout_prompts_never_occur_in_training_captions():
    data = build_dataset(seed=0, scale=0.1)
    captions = set(data.captions)
    joined = "\n".join(data.captions)
    for family in ("object", "colour", "artist", "character", "unsafe"):
        for c in CATALOGUE.items_by_family()[family]:
            for phrase in c.heldout:
                assert phrase not in joined, (family, c.name, phrase)
    for tmpl in HELDOUT_ARTIST_TEMPLATES + HELDOUT_CHARACTER_TEMPLATES:
        marker = tmpl.split("{")[0] or tmpl.split("}")[1].split("{")[0]
        assert marker.strip() and marker.strip() not in joined
    for p in prompts_for("artist", "Cora Voss", "heldout", n=6) + prompts_for("character", "Kiko", "keyword", n=4):
        assert p.text not in captions


def test_dataset_frequencies_are_controlled_and_recorded():
    a = build_dataset(seed=3, scale=0.05)
    b = build_dataset(seed=3, scale=0.05)
    assert a.manifest["content_sha256"] == b.manifest["content_sha256"]
    assert a.manifest["content_sha256"] != build_dataset(seed=4, scale=0.05).manifest["content_sha256"]
    counts = a.manifest["counts"]["artist"]
    tail = CATALOGUE.get("artist", "Rhea Solis")
    assert counts[tail.name] == max(1, round(tail.count * 0.05))  # tail artists appear only as planned
    assert counts["Alva Renn"] > counts["Jonas Pike"] > counts["Kai Tamsin"]
    assert sum(a.manifest["counts"]["character"].values()) == len(a)


def test_prompts_for_validates():
    with pytest.raises(UnknownNameError, match="heldout"):
        prompts_for("artist", "Cora Voss", "heldot")
    with pytest.raises(InvalidValueError, match="characters"):
        prompts_for("object", "circle", "keyword")
    with pytest.raises(UnknownNameError, match="family"):
        prompts_for("shape", "circle")
    kw = prompts_for("character", "Zorbo", "keyword", n=3)
    assert all("Zorbo" not in p.text and p.labels["character"] == "Zorbo" for p in kw)


def test_scale_is_validated():
    with pytest.raises(InvalidValueError, match="scale"):
        plan_scenes(scale=0)
