"""Tiny seeded Qwen-Image ControlNets and transformers built with diffusers (the oracle), and their inputs.

Sizes follow diffusers' own Qwen-Image ControlNet pipeline test (3 heads of 16 channels, 16-wide text,
rotary axes 8/4/4, 4 latent channels packed 2x2 into 16); two ControlNet blocks and five base blocks so
that the block order and the repeats matter.
"""
import re

import torch
from diffusers import QwenImageControlNetModel, QwenImageTransformer2DModel

AXES_DIM = (8, 4, 4)
TEXT_DIM = 16
LATENT_CHANNELS = 4
TINY = {"patch_size": 2, "in_channels": 4 * LATENT_CHANNELS, "out_channels": LATENT_CHANNELS,
        "attention_head_dim": 16, "num_attention_heads": 3, "joint_attention_dim": TEXT_DIM,
        "axes_dims_rope": AXES_DIM}
INPAINT_EXTRA = 4
"""``extra_condition_channels`` of the inpainting ControlNet: one mask channel, packed 2x2."""
QK_NORM = re.compile(r"(norm_(added_)?[qk]|txt_norm)\.weight$")


def randomize_qwen(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter re-randomised (the zero-initialised ``controlnet_*`` projections included).

    Norm weights stay near 1 so that attention is far from uniform and the rotary positions matter;
    everything else is small.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if QK_NORM.search(name) else 0.1 * noise)
    return model.eval()


def tiny_qwen_controlnet(seed: int = 0, num_layers: int = 2, extra_condition_channels: int = 0):
    """A diffusers ``QwenImageControlNetModel`` with :data:`TINY` sizes (4 extra channels = inpainting)."""
    torch.manual_seed(seed)
    model = QwenImageControlNetModel(**TINY, num_layers=num_layers, extra_condition_channels=extra_condition_channels)
    return randomize_qwen(model, seed + 1)


def tiny_qwen_transformer(seed: int = 0, num_layers: int = 5) -> QwenImageTransformer2DModel:
    """A base Qwen-Image transformer with more blocks than the ControlNets, so their residuals repeat."""
    torch.manual_seed(seed)
    return randomize_qwen(QwenImageTransformer2DModel(**TINY, num_layers=num_layers), seed + 1)


def pack(latent: torch.Tensor) -> torch.Tensor:
    """diffusers' Qwen-Image pipeline packing of a (B, C, H, W) latent into 2x2 patch tokens, channel-major."""
    b, c, h, w = latent.shape
    return latent.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // 2) * (w // 2), c * 4)


def qwen_inputs(seed: int = 3, batch: int = 2, height: int = 8, width: int = 12, tokens: int = 5):
    """Latent, time in 0..1 (one per row) and text tokens."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, LATENT_CHANNELS, height, width, generator=gen)
    context = torch.randn(batch, tokens, TEXT_DIM, generator=gen)
    t = torch.linspace(0.3, 0.8, batch)
    return x, t, context


def img_shapes(x: torch.Tensor):
    """The pipeline's ``img_shapes``: one (frames, token rows, token columns) per row."""
    return [(1, x.shape[-2] // 2, x.shape[-1] // 2)] * x.shape[0]


def diffusers_residuals(reference: QwenImageControlNetModel, x, t, context, hint):
    """``reference`` called as diffusers' Qwen-Image ControlNet pipeline calls it (``hint`` unpacked)."""
    with torch.no_grad():
        out = reference(hidden_states=pack(x), controlnet_cond=pack(hint), conditioning_scale=1.0,
                        encoder_hidden_states=context, timestep=t, img_shapes=img_shapes(x))
    return list(out.controlnet_block_samples)


def diffusers_denoise(base: QwenImageTransformer2DModel, x, t, context, samples=None):
    """The base transformer's packed output, given ``controlnet_block_samples`` or not."""
    with torch.no_grad():
        return base(hidden_states=pack(x), encoder_hidden_states=context, timestep=t, img_shapes=img_shapes(x),
                    controlnet_block_samples=samples, return_dict=False)[0]

