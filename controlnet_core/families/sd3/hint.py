"""The hint of SD3-family ControlNets: a control image, preprocessed per type, VAE-encoded, scaled.

The path (the same for both layouts): control image in 0..1 -> :func:`sd35_hint_pixels` (SD3.5
types only) -> the SD3 VAE's encoder -> :func:`hint_latent` -> ``SD3ControlNet.forward(hint=...)``.

Pixel values here follow ComfyUI's ``VAE.encode`` convention: it maps a pixel ``p`` to ``2p - 1``
before the encoder, as diffusers' image processor does with ``do_normalize=True``.
"""
from __future__ import annotations

from typing import Literal, Optional, Tuple, get_args

from torch import Tensor

from .model import SD3ControlNetConfig

__all__ = ["SD3_VAE_SCALING_FACTOR", "SD3_VAE_SHIFT_FACTOR", "SD35_CONTROL_TYPES", "HINT_CONVENTIONS",
           "hint_latent", "sd35_hint_pixels"]

SD3_VAE_SCALING_FACTOR = 1.5305
SD3_VAE_SHIFT_FACTOR = 0.0609
SD35_CONTROL_TYPES = {0: "blur", 1: "canny", 2: "depth"}
HintConvention = Literal["reference", "comfyui"]
HINT_CONVENTIONS: Tuple[HintConvention, ...] = get_args(HintConvention)


def hint_latent(vae_latent: Tensor, config: SD3ControlNetConfig, convention: HintConvention = "reference") -> Tensor:
    """The SD3 VAE's raw latent of the control image, scaled as the ControlNet was trained.

    diffusers scales it like the base latent, ``(z - 0.0609) * 1.5305``, except that its ControlNet
    pipeline skips the shift for ControlNets that zero the pooled vector (InstantX canny / pose /
    tile); its inpainting pipeline keeps the shift for the 17-channel inpainting ControlNet.
    ComfyUI skips the shift for every InstantX-layout ControlNet, inpainting included
    (``convention="comfyui"``), and keeps it for SD3.5.

    Args:
        vae_latent: :math:`(B, 16, H/8, W/8)`, the encoder's output before any scaling.
        config: the ControlNet's configuration.
        convention: one of :data:`HINT_CONVENTIONS`; only 17-channel ControlNets differ.

    Returns:
        :math:`(B, 16, H/8, W/8)`. For 17-channel inpainting ControlNets the caller encodes the
        image with masked pixels black and appends ``1 - mask`` at the latent size (1 = keep), as
        both diffusers and ComfyUI do.
    """
    if convention not in HINT_CONVENTIONS:
        raise ValueError(f"hint convention {convention!r} is not one of {HINT_CONVENTIONS}")
    inpainting = config.hint_channels > config.in_channels
    if config.force_zeros_for_pooled_projection and (convention == "comfyui" or not inpainting):
        return vae_latent * SD3_VAE_SCALING_FACTOR
    return (vae_latent - SD3_VAE_SHIFT_FACTOR) * SD3_VAE_SCALING_FACTOR


def sd35_hint_pixels(image: Tensor, control_type: Optional[int], convention: HintConvention = "reference") -> Tensor:
    """The control image as the SD3.5 ControlNet of ``control_type`` expects it before the VAE.

    * blur (0): unchanged.
    * canny (1): the reference (Stability's ``sd3_infer.py`` and the model card's
      ``SD3CannyImageProcessor``) feeds the encoder ``127.5 a + 0.5`` for an edge map ``a`` in
      0..1, i.e. pixels ``63.75 a + 0.75`` here. ComfyUI applies ``127.5 a + 0.5`` to the pixels
      and then its own ``2p - 1``, so its encoder sees ``255 a``: ``convention="comfyui"``
      reproduces that.
    * depth (2): inverted, ``1 - a``: the model expects near = dark, while depth estimators
      (Depth Anything, MiDaS) give near = bright; the model card inverts with
      ``DepthPreprocessor(..., invert=True)`` and ComfyUI with ``1 - a``.

    Args:
        image: :math:`(B, C, H, W)` in 0..1.
        control_type: 0, 1, 2, or None (no preprocessing).
        convention: one of :data:`HINT_CONVENTIONS`; only canny differs.

    Returns:
        Pixels for a ``p -> 2p - 1`` VAE encoder (values may leave 0..1 for canny).

    Example:
        >>> import torch
        >>> sd35_hint_pixels(torch.tensor([0.0, 1.0]), 1).tolist()
        [0.75, 64.5]
        >>> sd35_hint_pixels(torch.tensor([0.0, 1.0]), 1, "comfyui").tolist()
        [0.5, 128.0]
    """
    if convention not in HINT_CONVENTIONS:
        raise ValueError(f"hint convention {convention!r} is not one of {HINT_CONVENTIONS}")
    if control_type not in (None, *SD35_CONTROL_TYPES):
        raise ValueError(f"SD3.5 control type {control_type!r} is not one of {SD35_CONTROL_TYPES}")
    if control_type == 1:
        encoder_input = image * 255 * 0.5 + 0.5
        # ComfyUI hands the reference's encoder input to its VAE as pixels; undo 2p - 1 otherwise.
        return encoder_input if convention == "comfyui" else (encoder_input + 1.0) * 0.5
    if control_type == 2:
        return 1.0 - image
    return image
