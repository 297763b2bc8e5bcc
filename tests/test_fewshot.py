"""Few-shot erasing (Fuchi & Takagi, BMVC 2024): published trainable set, gradient-ascent sign, training images from
the toy renderer (checked by the oracle) or from the user, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from erasekit import erase
from erasekit.erasers.fewshot import (OBJECT_TEMPLATES, STYLE_TEMPLATES, FewShotConfig, FewShotHooks, ascent_loss,
                                      encode_latents, trainable_names)
from erasekit.worlds import get_world
from erasekit.errors import InvalidValueError


def _published(n_layers: int) -> set[str]:
    """mlp.fc1/fc2 of every layer + q/k/v/out of the last layer's self-attention (weights and biases)."""
    names = {f"encoder.layers.{i}.mlp.{fc}.{w}" for i in range(n_layers) for fc in ("fc1", "fc2")
             for w in ("weight", "bias")}
    names |= {f"encoder.layers.{n_layers - 1}.self_attn.{p}_proj.{w}" for p in "qkv" for w in ("weight", "bias")}
    names |= {f"encoder.layers.{n_layers - 1}.self_attn.out_proj.{w}" for w in ("weight", "bias")}
    return names


def test_edit_changes_exactly_the_published_parameters(tiny_pipe):
    edit = erase(tiny_pipe, "fewshot", erase=["Zorbo"], steps=1)
    assert set(edit.tensors) == {f"text_encoder.{n}" for n in _published(2)}
    assert edit.manifest["info"]["trainable"] == 4 * 2 + 8


def test_selection_on_a_12_layer_clip_naming():
    pick = trainable_names(12, "mlp-final-attn")
    assert pick("text_model.encoder.layers.11.self_attn.q_proj.weight")  # transformers < 5 prefix
    assert pick("encoder.layers.0.mlp.fc2.bias")
    assert not pick("encoder.layers.1.self_attn.q_proj.weight")  # "1" is not the last layer "11"
    assert not pick("encoder.layers.11.layer_norm1.weight")
    assert not pick("embeddings.token_embedding.weight") and not pick("final_layer_norm.weight")
    assert trainable_names(12, "all")("embeddings.token_embedding.weight")


def test_templates_are_the_published_sets():
    assert len(OBJECT_TEMPLATES) == 27 and len(STYLE_TEMPLATES) == 19
    assert all(t.count("{}") == 1 for t in OBJECT_TEMPLATES + STYLE_TEMPLATES)


def test_loss_is_gradient_ascent_on_the_denoising_error(tiny_pipe):
    pred, target = torch.zeros(2, 4, 8, 8), torch.ones(2, 4, 8, 8)
    assert float(ascent_loss(pred, target)) == pytest.approx(-1.0)
    # after training, the textual-inversion error on the training images is larger than before
    imgs = training_images("Zorbo", 4, seed=0)
    lat = encode_latents(tiny_pipe, imgs, torch.Generator().manual_seed(0), flip=False)
    noise = torch.randn(lat.shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([100, 300, 600, 900])
    ids = tiny_pipe.tokenizer(["a photo of a Zorbo"] * 4, padding="max_length", max_length=77,
                              return_tensors="pt").input_ids

    def error() -> float:
        with torch.no_grad():
            cond = tiny_pipe.text_encoder(ids)[0]
            pred = tiny_pipe.unet(tiny_pipe.scheduler.add_noise(lat, noise, t), t, encoder_hidden_states=cond).sample
            return float(((pred - noise) ** 2).mean())

    before = error()
    edit = erase(tiny_pipe, "fewshot", erase=["Zorbo"], steps=6, lr=1e-2)
    with edit.applied(tiny_pipe):
        after = error()
    assert after > before
    assert all(x < 0 for x in edit.manifest["info"]["train"]["losses"])


@pytest.mark.parametrize("concept,family", [("Alva Renn", "artist"), ("Zorbo", "character"), ("triangle", "object"),
                                            ("blue", "colour"), ("gore", "unsafe")])
def test_training_images_are_rendered_and_show_the_concept(oracle, concept, family):
    imgs = training_images(concept, 4, seed=3)
    assert imgs.shape == (4, 32, 32, 3) and imgs.dtype == np.uint8
    assert [p[family] for p in oracle.predict(imgs)] == [concept] * 4
    assert np.array_equal(imgs, training_images(concept, 4, seed=3))
    assert not np.array_equal(imgs, training_images(concept, 4, seed=4))


def test_rendered_images_are_recorded(tiny_pipe):
    edit = erase(tiny_pipe, "fewshot", erase=["gore", "bloody"], steps=1, n_images=3)
    info = edit.manifest["info"]["images"]
    assert info["source"] == "world" and info["count"] == 3 and info["groups"] == [["gore", "bloody"]]


def test_non_catalogue_concepts_need_images(tiny_pipe, tmp_path):
    with pytest.raises(InvalidValueError, match="needs images of 'Eiffel Tower'"):
        erase(tiny_pipe, "fewshot", erase=["Eiffel Tower"], steps=1)
    arr = training_images("triangle", 3, seed=0)
    for i, im in enumerate(arr):  # a folder of images of another size: resized to the pipeline's 32 px
        Image.fromarray(im).resize((48, 48)).save(tmp_path / f"img{i}.png")
    edit = erase(tiny_pipe, "fewshot", erase=["Eiffel Tower"], steps=1, images=str(tmp_path))
    assert edit.manifest["info"]["images"]["source"] == f"folder:{tmp_path}"
    assert edit.manifest["info"]["images"]["count"] == 3
    edit = erase(tiny_pipe, "fewshot", erase=["Eiffel Tower"], steps=1, hooks=FewShotHooks(images=arr))
    assert edit.manifest["info"]["images"]["source"] == "memory"
    with pytest.raises(InvalidValueError, match="pass one"):
        erase(tiny_pipe, "fewshot", erase=["Eiffel Tower"], steps=1, images=str(tmp_path),
              hooks=FewShotHooks(images=arr))


def test_bad_inputs_name_the_value(tiny_pipe, tmp_path):
    with pytest.raises(InvalidValueError, match="params='mlp'"):
        FewShotConfig(params="mlp")
    with pytest.raises(InvalidValueError, match="batch_size must be >= 1, got 0"):
        FewShotConfig(batch_size=0)
    with pytest.raises(InvalidValueError, match="concept_type='style'"):
        FewShotConfig(concept_type="style")
    with pytest.raises(InvalidValueError, match="nowhere"):
        erase(tiny_pipe, "fewshot", erase=["Zorbo"], steps=1, images=str(tmp_path / "nowhere"))
    with pytest.raises(InvalidValueError, match="float32"):
        erase(tiny_pipe, "fewshot", erase=["Zorbo"], steps=1,
              hooks=FewShotHooks(images=np.zeros((2, 32, 32, 3), np.float32)))


def training_images(concept: str, n: int, seed: int = 0):
    """The toy world's renders of `concept` (what few-shot erasing trains on without user images)."""
    return get_world("toyworld").images(concept, n, seed)
