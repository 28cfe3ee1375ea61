"""Tiny seeded Flux ControlNets and transformers built with diffusers (the oracle), and their inputs.

Widths follow diffusers' own Flux ControlNet tests (2 heads of 16 channels, 32-wide text and pooled
vectors, rotary axes 4/4/8); two blocks of each kind so that repeats and the block order matter.
"""
import re

import torch
from diffusers import FluxControlNetModel, FluxTransformer2DModel
from diffusers.pipelines.flux.pipeline_flux_controlnet import FluxControlNetPipeline

AXES_DIM = (4, 4, 8)
TEXT_DIM = 32
POOLED_DIM = 32
LATENT_CHANNELS = 4
TINY = {"patch_size": 1, "in_channels": 4 * LATENT_CHANNELS, "num_layers": 2, "num_single_layers": 2,
        "attention_head_dim": 16, "num_attention_heads": 2, "joint_attention_dim": TEXT_DIM,
        "pooled_projection_dim": POOLED_DIM, "axes_dims_rope": list(AXES_DIM)}
# XLabs embeds hint pixels with 16 output channels, packed 2x2 into 64: a 16-channel latent.
XLABS_LATENT_CHANNELS = 16
QK_NORM = re.compile(r"norm_(added_)?[qk]\.weight$")


def randomize_flux(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter re-randomised (zero-initialised projections included).

    QK-norm scales stay near 1 so that attention is far from uniform and the rotary positions
    matter; everything else is small.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if QK_NORM.search(name) else 0.05 * noise)
    return model.eval()


def tiny_flux_controlnet(seed: int = 0, **overrides) -> FluxControlNetModel:
    """A diffusers ``FluxControlNetModel`` with :data:`TINY` sizes (``overrides`` replace them)."""
    torch.manual_seed(seed)
    return randomize_flux(FluxControlNetModel(**{**TINY, **overrides}), seed + 1)


def tiny_xlabs_style_controlnet(seed: int = 0) -> FluxControlNetModel:
    """diffusers' XLabs-style ControlNet: pixel hints through ``input_hint_block``, packed 2x2."""
    channels = 4 * XLABS_LATENT_CHANNELS
    return tiny_flux_controlnet(seed, in_channels=channels, patch_size=2, conditioning_embedding_channels=16)


def tiny_flux_transformer(seed: int = 0, num_layers: int = 5, num_single_layers: int = 3,
                          in_channels: int = 4 * LATENT_CHANNELS) -> FluxTransformer2DModel:
    """A base Flux transformer with more blocks than the ControlNets, so their residuals repeat."""
    torch.manual_seed(seed)
    config = {k: v for k, v in TINY.items() if k not in ("num_layers", "num_single_layers", "in_channels")}
    model = FluxTransformer2DModel(**config, in_channels=in_channels, num_layers=num_layers,
                                   num_single_layers=num_single_layers)
    return randomize_flux(model, seed + 1)


def pack(latent: torch.Tensor) -> torch.Tensor:
    """diffusers' Flux pipeline packing of a (B, C, H, W) latent into 2x2 patch tokens."""
    b, c, h, w = latent.shape
    return FluxControlNetPipeline._pack_latents(latent, b, c, h, w)


def image_ids(latent: torch.Tensor) -> torch.Tensor:
    """diffusers' Flux pipeline position ids of the packed image tokens."""
    b, _, h, w = latent.shape
    return FluxControlNetPipeline._prepare_latent_image_ids(b, h // 2, w // 2, latent.device, latent.dtype)


def flux_inputs(seed: int = 3, channels: int = LATENT_CHANNELS, batch: int = 2, height: int = 8, width: int = 6,
                tokens: int = 5):
    """Latent, time (0..1), T5-like tokens, pooled vector and guidance, one value per row."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=gen)
    context = torch.randn(batch, tokens, TEXT_DIM, generator=gen)
    pooled = torch.randn(batch, POOLED_DIM, generator=gen)
    t = torch.linspace(0.3, 0.8, batch)
    guidance = torch.linspace(3.5, 2.0, batch)
    return x, t, context, pooled, guidance


def diffusers_residuals(reference: FluxControlNetModel, x, t, context, pooled, cond, *, guidance=None, mode=None):
    """``reference`` called as diffusers' Flux ControlNet pipeline calls it; (double, single) samples."""
    with torch.no_grad():
        out = reference(hidden_states=pack(x), controlnet_cond=cond, controlnet_mode=mode,
                        encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                        img_ids=image_ids(x), txt_ids=torch.zeros(context.shape[1], 3), guidance=guidance)
    return list(out.controlnet_block_samples or []), list(out.controlnet_single_block_samples or [])
