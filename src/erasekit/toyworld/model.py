"""Architectures of the toy world's Stable Diffusion and oracle, written in code (no download).

The diffusion model is made only of standard diffusers/transformers classes, so anything written against SD1.x
pipelines runs on it unchanged: `AutoencoderKL` (32x32x3 -> 8x8x4), `UNet2DConditionModel` with cross-attention,
`CLIPTextModel` (trained from scratch) and the real CLIP tokenizer.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from ..tokenizer import MAX_LENGTH

TEXT_DIM = 128


def vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(32, 64, 64), layers_per_block=1,
                latent_channels=4, sample_size=32, norm_num_groups=16)


def unet_config() -> dict:
    return dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                block_out_channels=(64, 128),
                down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=16)


def text_config() -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=49408, hidden_size=TEXT_DIM, intermediate_size=4 * TEXT_DIM,
                          num_hidden_layers=3, num_attention_heads=4, max_position_embeddings=MAX_LENGTH,
                          bos_token_id=49406, eos_token_id=49407, pad_token_id=49407, hidden_act="quick_gelu",
                          projection_dim=TEXT_DIM)


def scheduler_config() -> dict:
    return dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2", prediction_type="epsilon",
                clip_sample=False, steps_offset=1)


def new_vae() -> AutoencoderKL:
    return AutoencoderKL(**vae_config())


def new_unet() -> UNet2DConditionModel:
    return UNet2DConditionModel(**unet_config())


def new_text_encoder() -> CLIPTextModel:
    return CLIPTextModel(text_config())


def train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**scheduler_config())


# The toy model's sampling defaults, written into every trained pipeline's erasekit.json (the core reads them there):
# 25 DDIM steps; guidance 5.0 chosen by a sweep on direct prompts (5 vs 7.5: BENCHMARKS.md, "What made objects work").
SAMPLE_STEPS = 25
SAMPLE_GUIDANCE = 5.0


def sample_scheduler() -> DDIMScheduler:
    return DDIMScheduler(**scheduler_config(), set_alpha_to_one=False)


class Oracle(nn.Module):
    """A small CNN with one head per concept family; `features` (B, 256) is its penultimate embedding.

    Input: (B, 3, 32, 32) float images in [0, 1]. Output of `forward`: {family: (B, n_classes) logits}.
    """

    def __init__(self, head_sizes: dict[str, int]):
        super().__init__()

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]

        self.body = nn.Sequential(*block(3, 32, 1), *block(32, 64, 2), *block(64, 64, 1), *block(64, 128, 2),
                                  *block(128, 128, 2), nn.Flatten(), nn.Linear(128 * 16, 256), nn.SiLU())
        self.heads = nn.ModuleDict({f: nn.Linear(256, n) for f, n in head_sizes.items()})
        self.head_sizes = dict(head_sizes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images * 2 - 1)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.features(images)
        return {f: head(h) for f, head in self.heads.items()}
