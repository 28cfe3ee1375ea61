"""Binder of the Qwen-Image InstantX ControlNets (Union, Inpainting)."""
from __future__ import annotations

import torch

from ...controlnet_core.families.qwen_image.model import PATCH, expand_to_base
from .. import compat
from ..control import LoadedControlNet
from .binding import FamilyBinding, encode_with_vae
from .transformer import (check_transformer_fits, hint_vae_of, inpaint_hint_encoder, inpaint_rule_of, uniform_rule,
                          with_rotary_split)


def bind_qwen_image(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Qwen-Image InstantX ControlNet on a Qwen-Image MODEL, its residuals spread over the MODEL's blocks.

    ComfyUI's own Qwen-Image ControlNet assumes 60 base blocks; the count is read from the MODEL here, so
    reduced-depth bases get every residual where diffusers puts it.
    """
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    rule = inpaint_rule_of(control, node_id)
    dm = model.model.diffusion_model
    control = with_rotary_split(control, tuple(int(a) for a in dm.pe_embedder.axes_dim))
    num_blocks = len(dm.transformer_blocks)
    latent_format = model.model.latent_format

    def latent_of(image: torch.Tensor) -> torch.Tensor:
        # The Wan-2.1 VAE reads a batch of images as the frames of one video: encode each image on its own,
        # as one-frame latents (B, C, 1, h, w), which is what the MODEL's latent format normalises.
        rows = [encode_with_vae(vae, image[i:i + 1]) for i in range(image.shape[0])]
        return latent_format.process_in(torch.cat([r if r.ndim == 5 else r.unsqueeze(2) for r in rows]))[:, :, 0]

    return FamilyBinding(
        control=control,
        scales_rule=uniform_rule(control.net.num_residuals),
        input_popped=False,
        encode_hint=inpaint_hint_encoder(latent_of, rule),
        patch=PATCH,
        expand=lambda res: expand_to_base(res, num_blocks),
        attention=compat.attention_kernel(),
    )
