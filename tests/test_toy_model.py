"""Behaviour of the shipped toy model: it is a standard SD pipeline and it really knows its concepts.

The fidelity test uses a small fixed sample; its thresholds sit below the benchmark's measured values (BENCHMARKS.md)
but far above chance (1/8 for objects and colours, 1/10 for core artists, 1/6 for characters), so a broken model,
sampler or oracle fails it.
"""

import numpy as np
from diffusers import DDIMScheduler, StableDiffusionPipeline

from erasekit import generate
from erasekit.toyworld.plugin import manifest as toyworld_manifest
from erasekit.sampling import sampling_defaults
from erasekit.evaluation import evaluate
from erasekit.suite import Suite

# family -> minimum oracle agreement on 24-40 direct prompts
MIN_FIDELITY = {"object": 0.75, "colour": 0.8, "artist": 0.75, "character": 0.75, "unsafe": 0.75}


def test_shipped_model_is_a_standard_pipeline(toy_pipe_shared):
    p = toy_pipe_shared
    assert isinstance(p, StableDiffusionPipeline) and isinstance(p.scheduler, DDIMScheduler)
    assert p.unet.config.sample_size == 8 and p.vae_scale_factor == 4
    assert p.unet.config.cross_attention_dim == p.text_encoder.config.hidden_size
    img = p("a red circle", num_inference_steps=5, output_type="np", generator=__import__("torch").manual_seed(0))
    assert img.images.shape == (1, 32, 32, 3)


def test_manifest_records_how_to_reproduce():
    man = toyworld_manifest()
    for key in ("command", "config", "dataset", "timings_s", "oracle_weights_sha256", "erasekit_version"):
        assert key in man, key
    assert len(man["dataset"]["content_sha256"]) == 64
    assert man["dataset"]["counts"]["artist"]["Rhea Solis"] <= 5


def test_fidelity_on_a_small_sample(toy_pipe_shared, tmp_path):
    """Through the one measurement path (the harness, the world's prompts, the oracle): 12 direct prompts per family."""
    targets = {"object": ("circle", "triangle", "ring", "bar"), "colour": ("red", "green", "blue", "white"),
               "artist": ("Alva Renn", "Cora Voss", "Felix Orme", "Jonas Pike"), "character": ("Zorbo", "Mossy", "Kiko"),
               "unsafe": ("gore", "nudity")}
    per = {f: 12 // len(t) for f, t in targets.items()}
    for family, minimum in MIN_FIDELITY.items():
        suite = Suite(name=f"fidelity-{family}", targets=targets[family], samples=dict(direct=per[family]), steps=20,
                      seed=7, world="toyworld")
        res = evaluate(suite, [], tmp_path / family, pipe=toy_pipe_shared)
        got = res["variants"]["base"]["by_family"][family]["detection"]
        assert got >= minimum, (family, got, res["variants"]["base"]["metrics"])


def test_prompt_controls_the_image(toy_pipe_shared, oracle):
    """Same seeds, different prompts -> the oracle follows the prompt, not the noise."""
    g = sampling_defaults(toy_pipe_shared).guidance
    a = generate(toy_pipe_shared, ["a red square in the style of Cora Voss"] * 6, 0, guidance=g, steps=20)
    b = generate(toy_pipe_shared, ["a blue ring in the style of Alva Renn"] * 6, 0, guidance=g, steps=20)
    pa, pb = oracle.predict(a), oracle.predict(b)
    assert np.mean([p["colour"] == "red" for p in pa]) >= 0.8 and np.mean([p["colour"] == "blue" for p in pb]) >= 0.8
    assert np.mean([p["artist"] == "Cora Voss" for p in pa]) >= 0.8
    assert np.mean([p["artist"] == "Alva Renn" for p in pb]) >= 0.8
