"""Fitting a control image to the latent grid, and the inpaint-ControlNet hint."""
from __future__ import annotations

from typing import Literal, Tuple, get_args

import torch.nn.functional as F
from torch import Tensor

__all__ = ["RESIZE_MODES", "ResizeMode", "resample", "resize_hint", "inpaint_hint"]

ResizeMode = Literal["crop", "stretch", "fill"]
RESIZE_MODES: Tuple[ResizeMode, ...] = get_args(ResizeMode)


def resample(image: Tensor, size: Tuple[int, int], enlarge: str = "nearest-exact") -> Tensor:
    """``image`` :math:`(B, C, H, W)` at ``size``, the same tensor when the size already fits.

    Area average when shrinking both sides, ``enlarge`` (an ``F.interpolate`` mode) otherwise.

    Averaging keeps thin lines of edge maps (and soft mask edges) when shrinking; nearest keeps a control
    image crisp when enlarging, bilinear keeps a mask smooth.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    if image.shape[-2] >= size[0] and image.shape[-1] >= size[1]:
        return F.interpolate(image, size=size, mode="area")
    if enlarge in ("bilinear", "bicubic"):
        return F.interpolate(image, size=size, mode=enlarge, align_corners=False)
    return F.interpolate(image, size=size, mode=enlarge)


def resize_hint(image: Tensor, size: Tuple[int, int], mode: ResizeMode = "crop") -> Tensor:
    """Resize a control image to ``size`` = (H, W).

    Args:
        image: :math:`(B, C, H_0, W_0)`.
        size: target height and width.
        mode: ``crop`` (A1111 "Crop and Resize", ComfyUI's behaviour): scale to cover, centre-crop;
            ``stretch`` ("Just Resize"): scale each axis independently;
            ``fill`` ("Resize and Fill"): scale to fit inside, centre, pad with 0.

    Returns:
        :math:`(B, C, H, W)`.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"resize mode {mode!r} is not one of {RESIZE_MODES}")
    h0, w0 = image.shape[-2:]
    h, w = size
    if (h0, w0) == (h, w) or mode == "stretch":
        return resample(image, (h, w))
    cover = mode == "crop"
    scale = max(h / h0, w / w0) if cover else min(h / h0, w / w0)
    sh, sw = max(1, round(h0 * scale)), max(1, round(w0 * scale))
    if cover:
        sh, sw = max(sh, h), max(sw, w)
        scaled = resample(image, (sh, sw))
        top, left = (sh - h) // 2, (sw - w) // 2
        return scaled[..., top:top + h, left:left + w]
    sh, sw = min(sh, h), min(sw, w)
    scaled = resample(image, (sh, sw))
    out = image.new_zeros(image.shape[0], image.shape[1], h, w)
    top, left = (h - sh) // 2, (w - sw) // 2
    out[..., top:top + sh, left:left + sw] = scaled
    return out


def inpaint_hint(image: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    r"""Hint for ``control_v11p_sd15_inpaint``: the image with masked pixels set to -1.

    Args:
        image: :math:`(B, C, H, W)` in 0..1.
        mask: :math:`(B \text{ or } 1, 1, H, W)`, 1 = repaint.
        threshold: mask values above it count as masked (A1111 uses 0.5).
    """
    masked = (mask > threshold).to(image.dtype)
    return image * (1.0 - masked) - masked
