"""The Qwen-Image Fun ControlNet's 33-channel hint: control latent | keep mask | inpaint latent.

As the reference pipeline (VideoX-Fun ``QwenImageControlPipeline``) builds it:

* control latent: the VAE latent (mode) of the control image, normalised like the model's latents
  (Wan-2.1 per-channel mean and std); zeros without a control image;
* keep mask: the mask binarised at 0.5 (1 = repaint), inverted (1 = keep), resized nearest to the latent;
  zeros without a mask (the reference repaints everything then, and ``1 - 1 = 0``);
* inpaint latent: the latent of the image with its masked pixels set to mid-grey (0 in the VAE's -1..1
  range, the reference multiplies by ``mask < 0.5`` there), normalised the same way; zeros without an image.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MASK_THRESHOLD", "fun_hint", "keep_mask_latent", "masked_inpaint_pixels"]

MASK_THRESHOLD = 0.5
"""Mask values at or above it are repainted (the reference binarises with ``>= 0.5``)."""


def _binary(mask: Tensor) -> Tensor:
    """A ComfyUI MASK :math:`(B, H, W)` or :math:`(B, 1, H, W)` as :math:`(B, 1, H, W)`, 1 where repainted."""
    if mask.ndim == 3:
        mask = mask[:, None]
    return (mask >= MASK_THRESHOLD).to(torch.float32)


def keep_mask_latent(mask: Tensor, size: Tuple[int, int]) -> Tensor:
    """The hint's mask channel: 1 where the image is kept, at the latent's ``size`` (nearest, pixel ``8 i``).

    Args:
        mask: :math:`(B, H, W)` or :math:`(B, 1, H, W)` in 0..1, 1 = repaint, at the image's size.
        size: the latent's ``(h, w)``.

    Returns:
        :math:`(B, 1, h, w)` float32 of 0 and 1.

    Example:
        >>> keep_mask_latent(torch.tensor([[[0.2, 0.7], [0.5, 0.0]]]), (2, 2)).flatten().tolist()
        [1.0, 0.0, 0.0, 1.0]
    """
    return F.interpolate(1 - _binary(mask), size=tuple(size), mode="nearest")


def masked_inpaint_pixels(image: Tensor, mask: Tensor) -> Tensor:
    r"""The image the inpaint latent encodes: masked pixels mid-grey (0.5), the others kept.

    Args:
        image: :math:`(B, C, H, W)` in 0..1.
        mask: :math:`(B \text{ or } 1, H, W)` or :math:`(B \text{ or } 1, 1, H, W)` in 0..1 at the image's size,
            1 = repaint.
    """
    repaint = _binary(mask).to(image.dtype)
    return image * (1 - repaint) + 0.5 * repaint


def _rows(t: Tensor, batch: int) -> Tensor:
    return t.expand(batch, *t.shape[1:]) if t.shape[0] == 1 else t


def fun_hint(control: Optional[Tensor] = None, keep_mask: Optional[Tensor] = None,
             inpaint: Optional[Tensor] = None) -> Tensor:
    r"""Control latent, keep mask and inpaint latent side by side, zeros for the parts not given.

    Args:
        control: normalised control latent :math:`(B, C, h, w)`, or None.
        keep_mask: :func:`keep_mask_latent` :math:`(B, 1, h, w)`, or None.
        inpaint: normalised latent of :func:`masked_inpaint_pixels` :math:`(B, C, h, w)`, or None.

    Returns:
        :math:`(B, 2C + 1, h, w)` in the latents' dtype; parts with one row serve every row.

    Raises:
        ValueError: no latent given, or the parts disagree in channels, size or batch.

    Example:
        >>> fun_hint(torch.ones(1, 2, 1, 1)).flatten().tolist()
        [1.0, 1.0, 0.0, 0.0, 0.0]
    """
    latents = [t for t in (control, inpaint) if t is not None]
    if not latents:
        raise ValueError("a Fun ControlNet hint needs a control latent or an inpaint latent")
    like = latents[0]
    given = [t for t in (control, keep_mask, inpaint) if t is not None]
    batch = max(t.shape[0] for t in given)
    if any(t.shape[0] not in (1, batch) for t in given):
        raise ValueError(f"hint parts of batches {[t.shape[0] for t in given]}: give one row or one per latent")
    if any(t.shape[-2:] != like.shape[-2:] for t in given) or (
            control is not None and inpaint is not None and control.shape[1] != inpaint.shape[1]):
        raise ValueError(f"hint parts {[tuple(t.shape) for t in given]} do not share the latent's channels and size")
    channels, size = like.shape[1], like.shape[-2:]
    zeros = like.new_zeros(batch, channels, *size)
    mask = like.new_zeros(batch, 1, *size) if keep_mask is None else _rows(keep_mask.to(like), batch)
    return torch.cat((zeros if control is None else _rows(control, batch), mask,
                      zeros if inpaint is None else _rows(inpaint.to(like), batch)), dim=1)
