"""Evaluators, custom-prompt suites and the CLIP-score metric. Tiny random pipelines and a tiny random CLIP prove the
plumbing only (a random CLIP's scores mean nothing); NudeNet tests run only where the optional package is installed."""

import hashlib
import importlib.util
import json
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch

from erasekit.errors import ErasekitError, InvalidValueError, UnknownNameError
from erasekit.evaluation import Variant, evaluate, prompt_sets, run_images
from erasekit.evaluators import CallableEvaluator, evaluators, get_evaluator
from erasekit.toyworld.plugin import ToyOracleEvaluator
from erasekit.metrics import image_drift, metrics
from erasekit.suite import Suite, load_suite

HAS_NUDENET = importlib.util.find_spec("nudenet") is not None
PROMPTS = {"direct": ["a photo of a blob", "a blob on a table"], "heldout": ["a round gooey thing"],
           "unrelated": ["a red bicycle", "a snowy mountain"]}


def bright(images: np.ndarray) -> np.ndarray:
    """A stand-in classifier: "blob" is shown when the image is brighter than mid-grey."""
    return images.reshape(len(images), -1).mean(1) > 127


def custom_suite(**kw) -> Suite:
    base = dict(name="custom", targets=("blob",), samples={}, steps=2, guidance=3.0, model="", evaluator="callable",
                prompts={"blob": {k: list(v) for k, v in PROMPTS.items()}})
    return Suite(**{**base, **kw})


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random CLIPModel (32 px images, 8-d projections) saved with the offline CLIP tokenizer."""
    from transformers import CLIPConfig, CLIPModel

    from erasekit.tokenizer import clip_tokenizer

    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=49408, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, max_position_embeddings=77, bos_token_id=49406,
                                      eos_token_id=49407, pad_token_id=49407),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=8)
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(cfg).eval().save_pretrained(path)
    clip_tokenizer().save_pretrained(path)
    return path


# --------------------------------------------------------------------------------------------------------- registry
def test_registry_names_and_close_matches():
    assert {"toyworld-oracle", "nudenet", "callable"} <= set(evaluators.names())
    with pytest.raises(UnknownNameError, match="toyworld-oracle"):
        get_evaluator("toyworld-oracl")
    with pytest.raises(UnknownNameError, match="threshold"):
        get_evaluator("nudenet", treshold=0.5)  # option names are checked before the optional import
    with pytest.raises(InvalidValueError, match="concept="):
        get_evaluator("callable", fns=bright)
    ev = get_evaluator("callable", fns=bright, concept="blob")
    assert get_evaluator(ev) is ev and ev.target("blob") == ("blob", "blob")
    with pytest.raises(UnknownNameError, match="blob"):
        ev.target("blbo")
    imgs = np.stack([np.zeros((4, 4, 3), np.uint8), np.full((4, 4, 3), 200, np.uint8)])
    assert ev.predict(imgs) == [{"blob": "none"}, {"blob": "blob"}]
    assert ev.shows(imgs, "blob").tolist() == [False, True]
    with pytest.raises(InvalidValueError, match="returned"):
        CallableEvaluator(lambda im: [True], concept="blob").predict(imgs)


def test_toy_oracle_evaluator_is_the_oracle(oracle):
    ev = ToyOracleEvaluator(oracle)
    imgs = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    assert ev.predict(imgs) == oracle.predict(imgs) and ev.identity() == oracle.identity()
    assert ev.target("zorbo") == ("character", "Zorbo")
    with pytest.raises(UnknownNameError, match="Zorbo"):
        ev.target("Zorbbo")


# ----------------------------------------------------------------------------------------------------------- suites
def test_example_suite_loads_and_old_hashes_stay_valid():
    s = load_suite("sd-nudity-example")
    assert s.targets == ("nudity",) and s.is_custom("nudity") and s.evaluator == "nudenet" and s.model == ""
    assert s.evaluator_options == {"threshold": 0.6}
    assert all(len(s.limited(2).prompts["nudity"][k]) <= 2 for k in s.prompts["nudity"])
    d = load_suite("default")
    # fields added after 0.1 (empty here) are left out of the hash, so results made before them stay comparable
    later = ("prompts", "evaluator_options", "alignment", "imitation", "copycat", "unsafe")
    legacy = {k: v for k, v in asdict(d).items() if k not in later}
    assert d.sha256() == hashlib.sha256(json.dumps(legacy, sort_keys=True).encode()).hexdigest()
    assert custom_suite().sha256() != custom_suite(prompts={"blob": {"direct": ["x"]}}).sha256()


SUITE_HEAD = "name: x\nsampling: {steps: 2}\n"


@pytest.mark.parametrize("text, exc, needle", [
    ("targets:\n  - name: blob\n    promts: {direct: [a]}\n", UnknownNameError, "prompts"),
    ("targets:\n  - name: blob\n    prompts: {drect: [a]}\n", UnknownNameError, "direct"),
    ("targets:\n  - name: blob\n    prompts: {direct: []}\n", InvalidValueError, "non-empty list"),
    ("targets:\n  - name: blob\n    prompts: {direct: [a, '']}\n", InvalidValueError, "non-empty string"),
    ("targets:\n  - name: blob\n    prompts: {unrelated: [a]}\n", InvalidValueError, "at least one set"),
    ("targets:\n  - name: blob\n", InvalidValueError, "without prompts"),
    ("targets:\n  - {prompts: {direct: [a]}}\n", InvalidValueError, "non-empty name"),
    ("targets:\n  - Zorbo\n  - Zorbo\n", InvalidValueError, "twice"),
    ("targets: [Zorbo]\nevaluator: nudnet\n", UnknownNameError, "nudenet"),
    ("targets: [Zorbo]\nevaluator: {name: nudenet, treshold: 0.5}\n", UnknownNameError, "threshold"),
    ("targets: [Zorbo]\nevaluator: {threshold: 0.5}\n", InvalidValueError, "evaluator must be"),
    ("targets: [Zorbo]\nalignment: {clpi: /x}\n", UnknownNameError, "clip"),
    ("targets: [Zorbo]\nalignment: {clip: 3}\n", InvalidValueError, "alignment.clip"),
])
def test_bad_custom_suites_name_the_bad_key(tmp_path, text, exc, needle):
    p = tmp_path / "s.yaml"
    p.write_text(SUITE_HEAD + text)
    with pytest.raises(exc, match=needle):
        load_suite(str(p))


def test_custom_prompt_sets_cycle_and_label():
    ev = CallableEvaluator(bright, concept="blob")
    suite = custom_suite(samples={"direct": 5})
    sets = prompt_sets(suite, suite.world_for(ev), "blob")
    assert [p.text for p in sets["direct"]] == PROMPTS["direct"] * 2 + PROMPTS["direct"][:1]
    assert sets["direct"][0].labels == {"blob": "blob"} and sets["unrelated"][0].labels == {}
    assert len(sets["heldout"]) == 1 and "neighbours" not in sets
    suite = custom_suite(samples={"direct": 0})
    assert "direct" not in prompt_sets(suite, suite.world_for(ev), "blob")


# ----------------------------------------------------------------------------------------------------------- runner
def test_runner_on_custom_prompts_with_callable_evaluator_and_clip(tiny_pipe, tiny_clip, tmp_path):
    ev = CallableEvaluator(bright, concept="blob", version="test-1")
    res = evaluate(custom_suite(), [Variant("shielded", shield="negative_prompt")], tmp_path, pipe=tiny_pipe,
                   evaluator=ev, clip=str(tiny_clip))
    saved = json.loads((tmp_path / "results.json").read_text())
    prov = saved["provenance"]
    assert prov["evaluator"]["name"] == "callable" and prov["evaluator"]["version"] == "test-1"
    assert prov["evaluator"]["callables"]["blob"].endswith("bright")
    weights = (tiny_clip / "model.safetensors").read_bytes()
    assert prov["alignment"]["weights_sha256"] == hashlib.sha256(weights).hexdigest()
    assert prov["model"] == "<pipeline object>"
    imgs = {(v, "blob", s): run_images(tmp_path, v, "blob", s) for v in ("base", "shielded")
            for s in ("direct", "heldout", "unrelated")}
    from erasekit.metrics.clip_score import ClipScorer

    scorer = ClipScorer(tiny_clip)
    for v in ("base", "shielded"):
        m = saved["variants"][v]["metrics"]["blob"]
        assert set(m) == {"detection", "detection_heldout", "detection_generality", "image_drift", "clip_score_direct",
                          "clip_score_unrelated"}  # unlabelled unrelated prompts: no accuracy, image drift only
        assert m["detection"] == pytest.approx(bright(imgs[(v, "blob", "direct")]).mean())
        assert m["detection_generality"] == pytest.approx(bright(imgs[(v, "blob", "heldout")]).mean())
        assert m["image_drift"] == pytest.approx(image_drift(imgs[(v, "blob", "unrelated")],
                                                             imgs[("base", "blob", "unrelated")]))
        direct = scorer.pair_scores(imgs[(v, "blob", "unrelated")], PROMPTS["unrelated"])
        assert m["clip_score_unrelated"] == pytest.approx(max(direct.mean(), 0.0), abs=1e-4)
    assert saved["variants"]["base"]["metrics"]["blob"]["image_drift"] == 0.0
    assert saved["variants"]["shielded"]["metrics"]["blob"]["image_drift"] > 0.0  # the negative prompt changed them
    lines = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * sum(len(v) for v in PROMPTS.values())
    unrelated = [x for x in lines if x["set"] == "unrelated"]
    assert all(x["expected"] == {} and "clip_score" in x for x in unrelated)
    assert not any("clip_score" in x for x in lines if x["set"] == "heldout")


def test_runner_refuses_what_it_cannot_measure(tiny_pipe, tmp_path):
    ev = CallableEvaluator(bright, concept="blob")
    with pytest.raises(UnknownNameError, match="blob"):  # the evaluator cannot see the target: before generating
        evaluate(custom_suite(prompts={"blub": {"direct": ["x"]}}, targets=("blub",)), [], tmp_path, pipe=tiny_pipe,
                 evaluator=ev)
    with pytest.raises(InvalidValueError, match="--model"):
        evaluate(custom_suite(), [], tmp_path, evaluator=ev)
    with pytest.raises(InvalidValueError, match="fns="):  # "callable" named in a suite has no function to call
        evaluate(custom_suite(), [], tmp_path, pipe=tiny_pipe)
    with pytest.raises(InvalidValueError, match="config.json"):
        evaluate(custom_suite(), [], tmp_path, pipe=tiny_pipe, evaluator=ev, clip=str(tmp_path))
    assert not (tmp_path / "results.json").exists()


# ------------------------------------------------------------------------------------------------------- CLIP score
def test_clip_score_matches_a_direct_computation(tiny_clip, tmp_path):
    """clip_score = max(mean_i 100 cos(proj image_i, proj text_i), 0), with preprocessing written out by hand here:
    bicubic resize of the shortest edge to 32, centre crop, /255, CLIP mean/std."""
    from PIL import Image
    from transformers import CLIPModel

    from erasekit.metrics.clip_score import ClipScorer, clip_score
    from erasekit.tokenizer import clip_tokenizer

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 56, 3), dtype=np.uint8)
    texts = ["a red ring", "a picture of Zorbo in the style of Cora Voss", "x " * 100]  # the last one is truncated
    scorer = ClipScorer(tiny_clip, batch_size=2)

    mean = np.array([0.48145466, 0.4578275, 0.40821073])
    std = np.array([0.26862954, 0.26130258, 0.27577711])
    pix = []
    for im in images:
        r = np.asarray(Image.fromarray(im).resize((44, 32), Image.BICUBIC)).astype(np.float64)  # 56*32/40 = 44.8
        r = r[:, (44 - 32) // 2:(44 - 32) // 2 + 32]
        pix.append(((r / 255 - mean) / std).transpose(2, 0, 1))
    pix = torch.tensor(np.stack(pix), dtype=torch.float32)
    assert torch.allclose(scorer.pixel_values(images), pix, atol=1e-4)

    model = CLIPModel.from_pretrained(tiny_clip).eval()

    def direct(texts: list[str]) -> np.ndarray:
        tok = clip_tokenizer()(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        with torch.no_grad():
            img = model.visual_projection(model.vision_model(pixel_values=pix).pooler_output)
            txt = model.text_projection(model.text_model(input_ids=tok.input_ids,
                                                         attention_mask=tok.attention_mask).pooler_output)
        return torch.nn.functional.cosine_similarity(img, txt).numpy()

    cos = direct(texts)
    np.testing.assert_allclose(scorer.pair_scores(images, texts), 100 * cos, atol=1e-3)
    assert clip_score(images, texts, scorer) == pytest.approx(max(100 * cos.mean(), 0.0), abs=1e-3)
    for mixed in (["a cat", "a dog", "blue"], ["a dog"] * 3):  # clipped after averaging, not per pair
        c = direct(mixed)
        assert (c < 0).any() and (c > 0).any()  # (the random CLIP gives both signs here)
        assert clip_score(images, mixed, scorer) == pytest.approx(max(100 * c.mean(), 0.0), abs=1e-3)
    m = metrics.get("clip_score")(scorer)
    m.update(images[:2], texts[:2]), m.update(images[2:], texts[2:])
    assert m.higher_is_better and m.compute() == pytest.approx(max(100 * cos.mean(), 0.0), abs=1e-3)

    # without tokenizer files or preprocessor config, the offline tokenizer and CLIP defaults give the same scores
    bare = tmp_path / "bare"
    model.save_pretrained(bare)
    other = ClipScorer(bare)
    assert "offline" in other.identity()["tokenizer"] and other.identity()["weights_sha256"] == scorer.weights_sha256
    np.testing.assert_allclose(other.pair_scores(images, texts), scorer.pair_scores(images, texts), atol=1e-4)
    with pytest.raises(InvalidValueError, match="as many texts"):
        scorer.pair_scores(images, texts[:2])


# ------------------------------------------------------------------------------------------------------------ nudenet
def test_nudenet_missing_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "nudenet", None)  # import nudenet -> ImportError, installed or not
    with pytest.raises(ErasekitError, match=r"pip install erasekit\[nudenet\]"):
        get_evaluator("nudenet")
    with pytest.raises(ErasekitError, match="pip install nudenet"):
        from erasekit.shields import get_shield

        get_shield("image_filter:classifier=nudenet", concepts=["nudity"])


@pytest.mark.skipif(not HAS_NUDENET, reason="optional package nudenet not installed (pip install erasekit[nudenet])")
def test_nudenet_is_pinned_and_reads_images_as_from_a_file(tmp_path):
    from PIL import Image

    from erasekit.evaluators import NUDENET_CLASSES, NUDENET_VERSION, NUDENET_WEIGHTS_SHA256, NudeNetEvaluator

    ev = get_evaluator("nudenet")
    ident = ev.identity()
    assert ident["version"] == NUDENET_VERSION and ident["weights_sha256"] == NUDENET_WEIGHTS_SHA256
    assert ident["pinned"] and ident["threshold"] == 0.6 and ident["classes"] == list(NUDENET_CLASSES)
    assert ev.target("Nudity") == ("nudity", "nudity")
    with pytest.raises(UnknownNameError, match="nudity"):
        ev.target("violence")

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    images = np.stack([np.full((96, 128, 3), 128, np.uint8),
                       rng.integers(0, 256, (96, 128, 3), dtype=np.uint8),
                       np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.uint8)])
    from nudenet.nudenet import _read_image  # NudeNet's own preprocessing (pinned version)

    seen = []
    ev.detector.detect = lambda x: seen.append(x) or []  # what the wrapper hands to NudeNet
    ev.detections(images)
    for i, im in enumerate(images):  # an RGB array reaches the network exactly as the same PNG file read from disk
        Image.fromarray(im).save(tmp_path / f"{i}.png")
        blob = _read_image(str(tmp_path / f"{i}.png"))[0]
        np.testing.assert_array_equal(_read_image(seen[i])[0], blob)
    assert not np.array_equal(_read_image(np.ascontiguousarray(images[2]))[0], blob)  # RGB as-is would differ
    del ev.detector.detect
    assert ev.predict(images) == [{"nudity": "none"}] * 3  # synthetic patterns show no nudity

    class Fake:  # the decision rule on given detections: counted classes only, score >= threshold
        def detect(self, image):
            return [{"class": "FACE_FEMALE", "score": 0.95, "box": [0, 0, 1, 1]},
                    {"class": "BUTTOCKS_EXPOSED", "score": 0.6, "box": [0, 0, 1, 1]}]

    ev.detector = Fake()
    assert ev.predict(images[:1]) == [{"nudity": "nudity"}]
    strict = NudeNetEvaluator(threshold=0.61)
    strict.detector = Fake()
    assert strict.predict(images[:1]) == [{"nudity": "none"}]
    with pytest.raises(UnknownNameError, match="BUTTOCKS_EXPOSED"):
        NudeNetEvaluator(classes=["BUTTOCK_EXPOSED"])
    from erasekit.shields import get_shield

    shield = get_shield("image_filter:classifier=nudenet", concepts=["nudity"])
    assert shield.identity()["filter"]["weights_sha256"] == NUDENET_WEIGHTS_SHA256


def test_runner_attacks_custom_targets_with_the_suites_evaluator(tiny_pipe, tmp_path):
    seen = []

    def brightish(images: np.ndarray) -> np.ndarray:
        seen.append(len(images))
        return bright(images)

    ev = CallableEvaluator(brightish, concept="blob", version="test-1")
    suite = custom_suite(attack_prompts=1)
    res = evaluate(suite, [Variant("base", attack="softprompt:steps=1,skip_broken=false")], tmp_path,
                   pipe=tiny_pipe, evaluator=ev)
    att = res["variants"]["base"]["attacks"]["blob"]
    assert att["prompts"] == PROMPTS["direct"][:1] and att["checker"].endswith("[blob]")
    m = res["variants"]["base"]["metrics"]["blob"]
    assert m["attack_detection_pre"] == float(att["pre"][0])
    assert m["attack_success"] == float(att["pre"][0] or att["post"][0])
    assert bool(att["post"][0]) == bool(bright(run_images(tmp_path, "base", "blob", "attacked"))[0])


def test_bench_methods_on_custom_targets(tiny_pipe, tmp_path):
    from erasekit.evaluation import bench_methods

    ev = CallableEvaluator(bright, concept="blob", version="test-1")
    res = bench_methods(custom_suite(), ["uce"], ["blob"], tmp_path, pipe=tiny_pipe, evaluator=ev)
    assert set(res["variants"]) == {"base", "uce"} and res["targets"] == ["blob"]
    (edit,) = (tmp_path / "edits").glob("uce-blob-*.safetensors")
    assert res["variants"]["uce"]["cost"]["edit_seconds"] >= 0
    m = res["variants"]["uce"]["metrics"]["blob"]
    assert m["detection"] == pytest.approx(bright(run_images(tmp_path / "blob", "uce", "blob", "direct")).mean())
    assert res["variants"]["base"]["metrics"]["blob"]["image_drift"] == 0.0
    assert res["provenance"]["evaluator"]["name"] == "callable"
    with pytest.raises(UnknownNameError, match="Zorbbo.*blob"):
        bench_methods(custom_suite(), ["uce"], ["Zorbbo"], tmp_path / "bad", pipe=tiny_pipe, evaluator=ev)
