r"""The control context of Z-Image Fun ControlNets, built as the authors' pipeline builds it.

VideoX-Fun ``pipeline_z_image_control.py``: every image goes through the Flux VAE (mode of the posterior,
then ``(z - shift) * scale``, the base model's latent normalisation); the inpaint mask is binarised at 0.5,
inverted (1 = keep) and resized to the latent with nearest neighbours; the inpaint image is blanked where the
mask is set (0 in [-1, 1], grey 0.5 in 0..1) before encoding. 2.x files take ``control | keep-mask |
masked-image`` (16 + 1 + 16 channels), v1 the control latent alone; a part that is not given is zeros.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...errors import ControlNetInputError

__all__ = ["MASK_THRESHOLD", "binary_mask", "control_context", "keep_mask", "masked_image"]

MASK_THRESHOLD = 0.5
"""Mask values at or above this are inpainted."""


def binary_mask(mask: Tensor) -> Tensor:
    r"""The inpaint mask as 0/1 (1 = repaint), :math:`(B, 1, H, W)`, from :math:`(B, H, W)` or :math:`(B, 1, H, W)`.

    Example:
        >>> binary_mask(torch.tensor([[[0.2, 0.5, 0.9]]])).tolist()
        [[[[0.0, 1.0, 1.0]]]]
    """
    if mask.ndim == 3:
        mask = mask[:, None]
    if mask.ndim != 4 or mask.shape[1] != 1:
        raise ControlNetInputError(f"the inpaint mask must be (B, H, W) or (B, 1, H, W); got {tuple(mask.shape)}")
    return (mask >= MASK_THRESHOLD).to(torch.float32)


def masked_image(image: Tensor, mask: Tensor) -> Tensor:
    r"""The inpaint image with the region to repaint set to grey, ready for the VAE.

    Args:
        image: :math:`(B, 3, H, W)` in 0..1.
        mask: :math:`(B \text{ or } 1, H, W)` or with a channel axis, in 0..1 at the image's size.

    Returns:
        :math:`(B, 3, H, W)` in 0..1: 0.5 (0 in the VAE's [-1, 1]) where the mask is >= 0.5.

    Example:
        >>> masked_image(torch.ones(1, 3, 1, 2), torch.tensor([[[0.0, 1.0]]]))[0, 0].tolist()
        [[1.0, 0.5]]
    """
    repaint = binary_mask(mask).to(image.device)
    if repaint.shape[-2:] != image.shape[-2:]:
        raise ControlNetInputError(f"the inpaint mask is {tuple(repaint.shape[-2:])} but the inpaint image "
                                   f"{tuple(image.shape[-2:])}; give them the same size")
    return torch.where(repaint.bool(), torch.full_like(image, 0.5), image)


def keep_mask(mask: Tensor, size: Tuple[int, int]) -> Tensor:
    r"""The context's mask channel: 1 where the image is kept, at the latent's size (nearest).

    Args:
        mask: inpaint mask, 1 = repaint, :math:`(B, H, W)` or :math:`(B, 1, H, W)` in 0..1.
        size: latent ``(h, w)``.

    Returns:
        :math:`(B, 1, h, w)`, 0 or 1.

    Example:
        >>> keep_mask(torch.tensor([[[0.0, 0.0, 1.0, 1.0]]]), (1, 2)).flatten().tolist()
        [1.0, 0.0]
    """
    return F.interpolate(1 - binary_mask(mask), size=tuple(size), mode="nearest")


def control_context(channels: int, latent_channels: int, size: Tuple[int, int], batch: int, *,
                    control: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                    inpaint: Optional[Tensor] = None) -> Tensor:
    r"""The control context a Z-Image Fun ControlNet embeds, zeros for every part not given.

    Args:
        channels: the ControlNet's context channels (``latent_channels`` or ``2 latent_channels + 1``).
        latent_channels: the latent's channels (16).
        size: latent ``(h, w)``.
        batch: rows when no part is given.
        control: normalised latent of the control image :math:`(B, C, h, w)`.
        mask: inpaint mask in pixels (1 = repaint), :math:`(B, H, W)` or :math:`(B, 1, H, W)`.
        inpaint: normalised latent of :func:`masked_image` :math:`(B, C, h, w)`.

    Returns:
        :math:`(B, \text{channels}, h, w)` float32.

    Raises:
        ControlNetInputError: a part of another size, a mask or inpaint image for a v1 file, or an inpaint
            image without its mask.

    Example:
        >>> ctx = control_context(33, 16, (2, 2), 1, control=torch.ones(1, 16, 2, 2))
        >>> ctx[:, :16].mean().item(), ctx[:, 16:].abs().sum().item()
        (1.0, 0.0)
    """
    inpainting = channels == 2 * latent_channels + 1
    if not inpainting and channels != latent_channels:
        raise ControlNetInputError(f"a Z-Image control context has {latent_channels} or {2 * latent_channels + 1} "
                                   f"channels, not {channels}")
    if not inpainting and (mask is not None or inpaint is not None):
        raise ControlNetInputError("this Z-Image ControlNet (v1) takes no inpaint image or mask; use a 2.x file")
    if inpaint is not None and mask is None:
        raise ControlNetInputError("an inpaint image needs its mask (which region to repaint)")
    parts = [("control latent", control, latent_channels)]
    if inpainting:
        parts += [("keep mask", None if mask is None else keep_mask(mask, size), 1),
                  ("inpaint latent", inpaint, latent_channels)]
    rows = {p.shape[0] for _, p, _ in parts if p is not None}
    if len(rows) > 1:
        raise ControlNetInputError(f"the control parts have batches {sorted(rows)}; give one size of batch")
    batch = rows.pop() if rows else batch
    device = next((p.device for _, p, _ in parts if p is not None), torch.device("cpu"))
    out = []
    for what, part, width in parts:
        if part is None:
            out.append(torch.zeros(batch, width, *size, device=device))
            continue
        if tuple(part.shape[1:]) != (width, *size):
            raise ControlNetInputError(f"the {what} must be (B, {width}, {size[0]}, {size[1]}); "
                                       f"got {tuple(part.shape)}")
        out.append(part.to(device=device, dtype=torch.float32))
    return torch.cat(out, dim=1)
