"""Tiny random components for plumbing tests (diffusers' get_dummy_components style). They prove code paths run,
never that a method works: random models give near-constant losses even when an implementation is wrong."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

from .tokenizer import clip_tokenizer


def tiny_pipeline(seed: int = 0, cross_attention_dim: int = 32, world: str | None = None) -> StableDiffusionPipeline:
    """A random SD1.x-shaped pipeline: 32x32 images, 8x8x4 latents, 2-layer CLIP text encoder with the real tokenizer.
    `world`: a registered world the pipeline declares (`erasekit.worlds.attach_world`), e.g. "toyworld" so that toy
    concepts resolve in plumbing tests; random weights never prove efficacy."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(16, 32), norm_num_groups=8,
                                down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
                                cross_attention_dim=cross_attention_dim, attention_head_dim=2)
    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(8, 16, 16), norm_num_groups=8,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        latent_channels=4, sample_size=32)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=cross_attention_dim, intermediate_size=64,
                                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=77,
                                        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    sched = DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=clip_tokenizer(), unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    if world is not None:
        from .worlds import attach_world

        attach_world(pipe, world)
    return pipe


def random_spm_edit(pipe: StableDiffusionPipeline, concept: str, seed: int, scale: float = 0.05):
    """An SPM `Edit` of `pipe` with random non-zero rank-1 factors on every SPM target layer, held as low-rank
    factors exactly as `erasers.spm` makes them (for tests of transport and low-rank edits; no training)."""
    import copy

    from .edits import Edit, LowRank
    from .erasers.spm import Adapters

    unet = copy.deepcopy(pipe.unet)
    ad = Adapters(unet, rank=1, alpha=1.0, gen=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for layer in ad.layers.values():
            layer.up.copy_(torch.randn(layer.up.shape, generator=g) * scale)
    ad.remove()
    tensors = {f"unet.{n}.weight": LowRank(ad.layers[n.replace(".", "__")].up.detach(),
                                           ad.layers[n.replace(".", "__")].down.detach(), ad.layers[
                                               n.replace(".", "__")].scale) for n in ad.modules_}
    return Edit.from_tensors(pipe, tensors, method="spm", erase=[concept])


def small_text_world_config():
    """A text world of 8 entities and 2 books of 2 short paragraphs (the text tests' plumbing corpus)."""
    from .text.world import TextWorldConfig

    return TextWorldConfig(n_entities=8, n_forget_entities=2, n_holdout_entities=2, n_books=2, n_forget_books=1,
                           n_holdout_books=1, paragraphs_per_book=2, sentences_per_paragraph=2)


def small_text_world():
    """The world of `small_text_world_config()`, built."""
    from .text.world import build_world

    return build_world(small_text_world_config())


def tiny_text_lm(world, vocab: int = 320, seed: int = 0, context: int = 128):
    """(model, tokenizer): a random 1-layer GPT-2 with a BPE tokenizer trained on `world`'s documents (plumbing only)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from .text.train import train_tokenizer

    tok = train_tokenizer([d.text for d in world.documents], vocab)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_positions=context, n_embd=16, n_layer=1, n_head=2,
                                       bos_token_id=0, eos_token_id=0, pad_token_id=0)).eval()
    return model, tok
