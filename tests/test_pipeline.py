import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline

from erasekit import generate, load_pipeline
from erasekit.errors import ErasekitError, InvalidValueError, UnknownNameError
from erasekit.sampling import cfg_combine, decode, denoise, encode_prompts


def test_tiny_pipeline_is_a_standard_sd_pipeline(tiny_pipe):
    assert isinstance(tiny_pipe, StableDiffusionPipeline)
    imgs = generate(tiny_pipe, ["a red circle", "Zorbo"], seeds=[1, 2], steps=2)
    assert imgs.shape == (2, 32, 32, 3) and imgs.dtype == np.uint8


def test_save_load_round_trip(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "p")
    loaded = load_pipeline(str(tmp_path / "p"))
    for name in ("unet", "text_encoder", "vae"):
        a, b = getattr(tiny_pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    x = generate(tiny_pipe, ["a blue ring"], 5, steps=3)
    y = generate(loaded, ["a blue ring"], 5, steps=3)
    assert np.array_equal(x, y)


def test_folder_without_tokenizer_gets_the_offline_clip_tokenizer(tiny_pipe, tmp_path):
    tiny_pipe.save_pretrained(tmp_path / "p")
    import shutil

    shutil.rmtree(tmp_path / "p" / "tokenizer")
    loaded = load_pipeline(str(tmp_path / "p"))
    assert loaded.tokenizer("a painting in the style of Van Gogh").input_ids[:3] == [49406, 320, 3086]


def test_same_seed_same_image_in_any_batch(tiny_pipe):
    alone = generate(tiny_pipe, ["a red circle"], [11], steps=3)
    batched = generate(tiny_pipe, ["Zorbo", "a red circle"], [10, 11], steps=3)
    assert np.array_equal(alone[0], batched[1])
    assert not np.array_equal(batched[0], batched[1])


def test_explicit_loop_equals_pipeline_call(tiny_pipe):
    prompts = ["a red circle", "Zorbo in the style of Alva Renn"]
    ref = generate(tiny_pipe, prompts, [3, 4], steps=4, guidance=4.0)
    cond, uncond = encode_prompts(tiny_pipe, prompts), encode_prompts(tiny_pipe, [""])
    ours = decode(tiny_pipe, denoise(tiny_pipe, [uncond, cond], cfg_combine(4.0), [3, 4], steps=4))
    assert np.array_equal(ref, ours)
    other = decode(tiny_pipe, denoise(tiny_pipe, [uncond, cond], cfg_combine(9.0), [3, 4], steps=4))
    assert not np.array_equal(ref, other)


@pytest.mark.parametrize("name, exc, needle", [
    ("toywrld", UnknownNameError, "toyworld"),
    ("./no/such/folder", UnknownNameError, "toyworld"),
])
def test_load_pipeline_errors(name, exc, needle):
    with pytest.raises(exc, match=needle):
        load_pipeline(name)


def test_folder_that_is_not_a_pipeline(tmp_path):
    with pytest.raises(ErasekitError, match="model_index.json"):
        load_pipeline(str(tmp_path))


def test_generate_validates(tiny_pipe):
    with pytest.raises(InvalidValueError, match="at least one prompt"):
        generate(tiny_pipe, [], 0)
    with pytest.raises(InvalidValueError, match="2 seeds for 1 prompts"):
        generate(tiny_pipe, ["a"], [1, 2])
    with pytest.raises(InvalidValueError, match="steps"):
        generate(tiny_pipe, ["a"], 0, steps=0)


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DDPMScheduler", "EulerAncestralDiscreteScheduler"])
def test_generate_equals_the_pipeline_for_every_scheduler(toy_pipe, scheduler):
    """One generation path: `generate` (the explicit loop shields/attacks use) equals `pipe(...)` with the same
    per-image generators, for deterministic and stochastic schedulers (the generators reach every step). The toy
    model, not a random one, so that the compared images are real pictures (`ours.std() > 10`); the tiny-pipe test
    below compares latents."""
    import diffusers

    tiny_pipe = toy_pipe
    tiny_pipe.scheduler = getattr(diffusers, scheduler).from_config(tiny_pipe.scheduler.config)
    prompts, seeds = ["a red circle", "a blue square", "a green ring"], [3, 7, 11]
    ours = generate(tiny_pipe, prompts, seeds, steps=4, guidance=3.0)
    theirs = tiny_pipe(prompts, num_inference_steps=4, guidance_scale=3.0, output_type="np",
                       generator=[torch.Generator().manual_seed(s) for s in seeds],
                       height=ours.shape[1], width=ours.shape[2]).images
    theirs = (np.clip(theirs, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    # the same seed gives the same image in another batch (stochastic steps included)
    alone = generate(tiny_pipe, prompts[1:2], seeds[1:2], steps=4, guidance=3.0)
    assert np.abs(alone[0].astype(int) - ours[1].astype(int)).max() <= 1  # batched kernels round differently
    if scheduler != "DDIMScheduler":  # a stochastic scheduler really draws noise per step: other seeds differ
        other = generate(tiny_pipe, prompts[1:2], [seeds[1] + 1], steps=4, guidance=3.0)
        assert np.abs(other[0].astype(int) - ours[1].astype(int)).max() > 1
    assert ours.std() > 10  # real images, not a saturated constant


@pytest.mark.parametrize("scheduler", ["DDIMScheduler", "DDPMScheduler", "EulerAncestralDiscreteScheduler"])
def test_generate_latents_equal_the_pipeline_on_the_tiny_pipe(tiny_pipe, scheduler, monkeypatch):
    """`generate`'s final latents (what it decodes) equal `pipe(..., output_type="latent")` with one seeded generator
    per image, negative prompt included, for deterministic and stochastic schedulers; and they do not depend on the
    global RNG (the per-image generators reach every stochastic step)."""
    import diffusers

    import erasekit.generation as generation

    pipe = tiny_pipe
    # SD1.x's own beta schedule: the tiny pipe's squaredcos_cap_v2 ends at alpha_bar = 0, an infinite Euler sigma
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config, beta_schedule="scaled_linear",
                                                               beta_start=0.00085, beta_end=0.012)
    seen: list[torch.Tensor] = []
    real_decode = generation.decode
    monkeypatch.setattr(generation, "decode", lambda p, lat: seen.append(lat.clone()) or real_decode(p, lat))
    prompts, seeds = ["a red circle", "a blue square", "a green ring"], [3, 7, 11]
    kw = dict(num_inference_steps=4, guidance_scale=3.0, negative_prompt=["blurry"] * len(prompts))
    torch.manual_seed(0)
    ours = generate(pipe, prompts, seeds, steps=4, guidance=3.0, negative_prompt="blurry")
    theirs = pipe(prompts, output_type="latent", generator=[torch.Generator().manual_seed(s) for s in seeds],
                  **kw).images
    torch.testing.assert_close(seen[0], theirs, rtol=0, atol=1e-5)
    images = pipe(prompts, output_type="np", generator=[torch.Generator().manual_seed(s) for s in seeds], **kw).images
    images = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    assert np.abs(ours.astype(int) - images.astype(int)).max() <= 1
    torch.manual_seed(1)  # another global RNG state: the same latents
    generate(pipe, prompts, seeds, steps=4, guidance=3.0, negative_prompt="blurry")
    assert torch.equal(seen[1], seen[0])
    generate(pipe, prompts, seeds, steps=4, guidance=3.0)  # the negative prompt is used
    assert (seen[2] - seen[0]).abs().max() > 1e-3
