"""Tiny seeded ControlNets shaped like SD1.5 and SDXL, built with diffusers (the oracle)."""
import torch
from diffusers import ControlNetModel

from cnr_pack.controlnet_core.layers.embeddings import timestep_embedding

CONTEXT_DIM = 32
SD15_HEADS = 8  # what detection assumes for convolution projections
SDXL_HEADS = 1  # 64-channel heads on 64 channels, as detection assumes for linear projections
TEXT_EMBED_DIM = 16
TIME_EMBED_DIM = 8


def tiny_sd15_diffusers(seed: int = 0, randomize: bool = True) -> ControlNetModel:
    """12 + 1 residuals like SD1.5: 4 levels, 2 res blocks each, attention on the first three."""
    torch.manual_seed(seed)
    model = ControlNetModel(
        block_out_channels=(32, 64, 64, 64), layers_per_block=2, cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=SD15_HEADS, norm_num_groups=32,
    )
    return randomize_all(model, seed) if randomize else model.eval()


def tiny_sd2_diffusers(seed: int = 0) -> ControlNetModel:
    """12 + 1 residuals like SD2.x: linear transformer projections, no y vector, 64-channel heads."""
    torch.manual_seed(seed)
    model = ControlNetModel(
        block_out_channels=(64, 64, 64, 64), layers_per_block=2, cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=1, norm_num_groups=32, use_linear_projection=True,
    )
    return randomize_all(model, seed)


# diffusers arguments of the tiny SDXL-like encoder, shared by the ControlNet and the ControlNet Union.
TINY_SDXL_KWARGS = dict(
    block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=CONTEXT_DIM,
    attention_head_dim=SDXL_HEADS, norm_num_groups=32,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    transformer_layers_per_block=(0, 1, 2), use_linear_projection=True,
    addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
    projection_class_embeddings_input_dim=TEXT_EMBED_DIM + 6 * TIME_EMBED_DIM,
)


def tiny_sdxl_diffusers(seed: int = 0, randomize: bool = True) -> ControlNetModel:
    """9 + 1 residuals like SDXL: 3 levels, no attention on the first, 1 and 2 transformer blocks after."""
    torch.manual_seed(seed)
    model = ControlNetModel(**TINY_SDXL_KWARGS)
    return randomize_all(model, seed) if randomize else model.eval()


def randomize_all(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Re-randomise every parameter, zero-initialised ones included, or residuals would be 0."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return model.eval()


def sdxl_y(text_embeds: torch.Tensor, time_ids: torch.Tensor) -> torch.Tensor:
    """The ``y`` vector ComfyUI builds for SDXL: pooled text, then sinusoidal size embeddings."""
    b = text_embeds.shape[0]
    return torch.cat([text_embeds, timestep_embedding(time_ids.flatten(), TIME_EMBED_DIM).reshape(b, -1)], -1)


def sample_inputs(batch: int = 2, latent: int = 8, seed: int = 0):
    """(x, timesteps, context, hint) for a latent of ``latent``x``latent``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, latent, latent, generator=gen)
    t = torch.tensor([981.0, 21.0][:batch] + [500.0] * max(0, batch - 2))
    context = torch.randn(batch, 7, CONTEXT_DIM, generator=gen)
    hint = torch.rand(batch, 3, latent * 8, latent * 8, generator=gen)
    return x, t, context, hint
