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
