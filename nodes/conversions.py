"""ComfyUI tensor layouts to the core's BCHW, with errors naming the node and input.

Images: ComfyUI's IMAGE is RGB, but loaders and other packs also pass grey (1 channel) and RGBA
(4 channels). A grey image is repeated to RGB and an alpha channel is dropped, here, once, so
every node and the sampler see RGB. NaN or infinite pixels and mask values are refused.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .base import NodeInputError
from .validation import check_finite


def image_to_bchw(image: Tensor, node: str, name: str) -> Tensor:
    """IMAGE ``[B,H,W,C]`` to RGB ``[B,3,H,W]`` float32 (a new tensor; the input is untouched).

    C = 1 (grey) is repeated to RGB; C = 4 (RGBA) drops the alpha channel.
    """
    if not isinstance(image, Tensor) or image.ndim != 4 or 0 in image.shape:
        shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise NodeInputError(node, name, f"must be an IMAGE batch [B,H,W,C] with B, H, W >= 1; got {shape}")
    channels = image.shape[-1]
    if channels not in (1, 3, 4):
        raise NodeInputError(node, name, f"has {channels} channels; give an RGB image (grey with 1 channel and "
                                         "RGBA with 4 are converted too: grey is repeated, alpha dropped)")
    check_finite(node, name, image, "pixel values")
    rgb = image[..., :3] if channels == 4 else image.expand(*image.shape[:-1], 3) if channels == 1 else image
    # One memory layout whatever the input's strides, so equal pixels give bit-equal results downstream.
    return rgb.movedim(-1, 1).to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def bchw_to_image(image: Tensor) -> Tensor:
    return image.movedim(1, -1)


def mask_to_b1hw(mask: Tensor, node: str, name: str) -> Tensor:
    """MASK ``[B,H,W]`` (or one ``[H,W]`` mask) to ``[B,1,H,W]`` float32 (a new tensor)."""
    if not isinstance(mask, Tensor):
        raise NodeInputError(node, name, f"must be a MASK [B,H,W]; got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or 0 in mask.shape:
        raise NodeInputError(node, name, f"must be a MASK [B,H,W] or [H,W] with B, H, W >= 1; got {tuple(mask.shape)}")
    check_finite(node, name, mask, "mask values")
    return mask[:, None].to(torch.float32, copy=True)
