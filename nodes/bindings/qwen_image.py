"""Binders of the Qwen-Image ControlNets: InstantX (Union, Inpainting) and the Qwen-Image-2512 Fun ControlNet
Union, which runs on the MODEL's own embedders."""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch

from ...controlnet_core.families.qwen_image.fun import QwenFunBase, curved_strength, place_skips, skip_places
from ...controlnet_core.families.qwen_image.fun_hint import fun_hint, keep_mask_latent, masked_inpaint_pixels
from ...controlnet_core.families.qwen_image.model import PATCH, expand_to_base
from ...controlnet_core.injection.hint import resample, resize_hint
from ...controlnet_core.injection.weighting import uniform_scales
from .. import compat
from ..base import NodeInputError
from ..control import LoadedControlNet
from .binding import FamilyBinding, ScalesRule, encode_with_vae
from .transformer import (check_transformer_fits, hint_vae_of, inpaint_hint_encoder, inpaint_rule_of, uniform_rule,
                          with_rotary_split)

APPLY_NODE = "CNR_ApplyControlResiduals"


def _latent_encoder(model, vae):
    """Images (B, 3, H, W) in 0..1 to the MODEL's normalised latents (B, C, h, w), one frame each."""
    latent_format = model.model.latent_format

    def encode(image: torch.Tensor) -> torch.Tensor:
        # The Wan-2.1 VAE reads a batch of images as the frames of one video: encode each image on its own,
        # as one-frame latents (B, C, 1, h, w), which is what the MODEL's latent format normalises.
        rows = [encode_with_vae(vae, image[i:i + 1]) for i in range(image.shape[0])]
        return latent_format.process_in(torch.cat([r if r.ndim == 5 else r.unsqueeze(2) for r in rows]))[:, :, 0]
    return encode


def bind_qwen_image(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Qwen-Image ControlNet on a Qwen-Image MODEL, its residuals spread over the MODEL's blocks.

    ComfyUI's own Qwen-Image ControlNet assumes 60 base blocks; the count is read from the MODEL here, so
    reduced-depth bases get every residual where diffusers puts it.
    """
    if getattr(control.net, "borrows_base_embedders", False):
        return bind_qwen_fun(model, control, node_id)
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    rule = inpaint_rule_of(control, node_id)
    dm = model.model.diffusion_model
    control = with_rotary_split(control, tuple(int(a) for a in dm.pe_embedder.axes_dim))
    num_blocks = len(dm.transformer_blocks)
    return FamilyBinding(
        control=control,
        scales_rule=uniform_rule(control.net.num_residuals),
        input_popped=False,
        encode_hint=inpaint_hint_encoder(_latent_encoder(model, vae), rule),
        patch=PATCH,
        expand=lambda res: expand_to_base(res, num_blocks),
        attention=compat.attention_kernel(),
    )


def _base_embedders(model) -> QwenFunBase:
    """The MODEL's own ``img_in``, ``txt_norm``, ``txt_in`` and ``time_text_embed``, fed in its compute dtype.

    They are called as the MODEL calls them during sampling, so its LoRAs, quantised or low-VRAM weights and
    device placement apply to the Fun ControlNet too; nothing is copied or attached to the MODEL.
    """
    dm = model.model.diffusion_model
    dtype = compat.model_dtype(model)
    return QwenFunBase(img_in=lambda t: dm.img_in(t.to(dtype)), txt_norm=lambda t: dm.txt_norm(t.to(dtype)),
                       txt_in=lambda t: dm.txt_in(t.to(dtype)), time_text_embed=dm.time_text_embed)


def _fun_rule(count: int, curve: str) -> ScalesRule:
    """The Fun ControlNet's strength rule: the curved strength times the block weight, ``balanced`` mode only."""
    return lambda strength, mode, _soft_base, weights: uniform_scales(count, curved_strength(strength, curve), mode,
                                                                      weights)


def _inpaint_part(image: Optional[torch.Tensor], size) -> Optional[torch.Tensor]:
    return None if image is None else resize_hint(image.to(torch.float32), size, "crop")


def bind_qwen_fun(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Qwen-Image Fun ControlNet on a Qwen-Image MODEL: it runs on the MODEL's embedders and its skips land
    every ``N // n`` blocks from block 0 (0, 12, 24, 36, 48 of 60), with N read from the MODEL.

    The hint is the control image's latent, then the keep mask and the inpaint image's latent when the
    loaded control carries ``inpaint_mask`` / ``inpaint_image`` (zeros otherwise, as the reference has them).
    """
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    dm = model.model.diffusion_model
    cfg = control.net.config
    latent_channels = dm.img_in.in_features // (PATCH * PATCH)
    if latent_channels != cfg.in_channels:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' reads {cfg.in_channels}-channel latents but the model's are "
                             f"{latent_channels}-channel; load a Fun ControlNet made for this model")
    num_blocks = len(dm.transformer_blocks)
    try:
        skip_places(cfg.depth, num_blocks)
    except ValueError as e:
        raise NodeInputError(node_id, "model", f"'{control.name}': {e}") from None
    control = with_rotary_split(control, tuple(int(a) for a in dm.pe_embedder.axes_dim))
    control = replace(control, net=control.net.with_base(_base_embedders(model)))
    encode = _latent_encoder(model, vae)
    mask, inpaint_image = control.inpaint_mask, control.inpaint_image

    def encode_hint(image: torch.Tensor) -> torch.Tensor:
        size = tuple(image.shape[-2:])
        latent = encode(image)
        keep = None
        if mask is not None:
            pixels_mask = resample(mask.reshape(-1, 1, *mask.shape[-2:]).float(), size, "bilinear")
            keep = keep_mask_latent(pixels_mask, tuple(latent.shape[-2:]))
        inpaint = _inpaint_part(inpaint_image, size)
        if inpaint is not None:
            if mask is not None:
                inpaint = masked_inpaint_pixels(inpaint, pixels_mask)
            inpaint = encode(inpaint)
        try:
            return fun_hint(latent, keep, inpaint)
        except ValueError as e:
            raise NodeInputError(APPLY_NODE, "image", f"'{control.name}': {e}") from None

    return FamilyBinding(
        control=control,
        scales_rule=_fun_rule(cfg.depth, cfg.strength_curve),
        input_popped=False,
        encode_hint=encode_hint,
        patch=PATCH,
        expand=lambda res: place_skips(res, num_blocks),
        attention=compat.attention_kernel(),
    )
