"""Inpaint mask preparation: threshold, grow, feather, latent downscale, masked image.

Masks are :math:`(B, 1, H, W)` floats in 0..1 with 1 = repaint. The *sampling* mask (what the
sampler may change) and the *paste* mask (how generated pixels are blended back) are separate:
feathering shapes only the paste mask and keeps it inside the sampling mask, so blending never
widens the changed area.
"""
from __future__ import annotations

import math
from typing import Literal, Tuple, get_args

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d
from torch import Tensor

__all__ = [
    "LATENT_DOWNSCALES",
    "LatentDownscale",
    "FILLS",
    "Fill",
    "binarize",
    "grow",
    "feather_inside",
    "latent_mask",
    "masked_image",
]

LatentDownscale = Literal["nearest", "bilinear_round", "any_pixel"]
LATENT_DOWNSCALES: Tuple[LatentDownscale, ...] = get_args(LatentDownscale)
Fill = Literal["grey", "original"]
FILLS: Tuple[Fill, ...] = get_args(Fill)


def binarize(mask: Tensor, threshold: float) -> Tensor:
    """1 where ``mask > threshold``, else 0. ``threshold < 0`` keeps the soft mask unchanged."""
    if threshold < 0:
        return mask.clone()
    return (mask > threshold).to(mask.dtype)


def _shift_x(t: Tensor, dx: int) -> Tensor:
    """Shift along width by ``dx`` (positive = right), filling with 0."""
    if abs(dx) >= t.shape[-1]:
        return torch.zeros_like(t)
    if dx > 0:
        return F.pad(t[..., :-dx], (dx, 0))
    return F.pad(t[..., -dx:], (0, -dx))


def _dilate_disc(src: Tensor, r: int) -> Tensor:
    """Grey dilation by a disc of radius ``r``; zero outside the tensor.

    Row maxima of growing half-width are built incrementally (two maxima per step) and each disc
    row uses the one of its half-width, so the cost is about ``4 r`` maxima over the tensor. Disc
    rows further away than the tensor is tall, and half-widths beyond its width, add nothing and
    are skipped, so thin strips stay cheap under large radii.
    """
    h, w = src.shape[-2:]
    reach = min(r, h - 1)
    padded = F.pad(src, (0, 0, reach, reach))
    half_of = {dy: min(math.isqrt(r * r + r - dy * dy), w - 1) for dy in range(-reach, reach + 1)}
    out = torch.zeros_like(src)
    row_max = padded
    for half in range(max(half_of.values()) + 1):
        if half:
            row_max = torch.maximum(row_max, torch.maximum(_shift_x(padded, half), _shift_x(padded, -half)))
        for dy, width in half_of.items():
            if width == half:
                out = torch.maximum(out, row_max[..., reach + dy:reach + dy + h, :])
    return out


def grow(mask: Tensor, pixels: int) -> Tensor:
    """Dilate (``pixels > 0``) or erode (``< 0``) by a disc of that radius.

    Beyond the image border the mask continues as at the border, so a mask touching the edge
    does not erode away from it. Only the mask's bounding box plus the radius is processed, so
    small masks on large images stay cheap.

    Args:
        mask: :math:`(B, 1, H, W)`.
        pixels: radius; 0 returns a copy.
    """
    out = mask.clone()
    nonzero = torch.nonzero(mask.amax(dim=(0, 1)) > 0)
    if pixels == 0 or nonzero.numel() == 0:
        return out
    h, w = mask.shape[-2:]
    # A disc as wide as the image's diagonal already reaches every pixel from every pixel: any
    # larger radius gives the same result, at a cost growing with the radius squared.
    r = min(abs(pixels), math.ceil(math.hypot(h, w)))
    y0, x0 = (nonzero.amin(0) - r).clamp(min=0).tolist()
    y1, x1 = (nonzero.amax(0) + r + 1).tolist()
    y1, x1 = min(y1, h), min(x1, w)
    region = mask[..., y0:y1, x0:x1]
    # Eroding treats everything outside the region as 1: inside the image that is beyond the
    # radius, and beyond the border it equals continuing the mask there (each border copy lies
    # farther away than the border pixel it copies, which the disc already covers).
    out[..., y0:y1, x0:x1] = _dilate_disc(region, r) if pixels > 0 else 1.0 - _dilate_disc(1.0 - region, r)
    return out


def feather_inside(mask: Tensor, pixels: int) -> Tensor:
    """Soft paste mask that ramps from 0 at the mask's edge to 1 about ``pixels`` inside it.

    Gaussian-blurs the mask eroded by ``pixels / 2`` (sigma ``pixels / 4``), then multiplies by
    the mask itself: the weight is exactly 0 wherever the mask is 0. Parts too thin to hold the
    ramp (erosion removes them) keep the mask's own values, so every masked pixel is pasted.

    Args:
        mask: :math:`(B, 1, H, W)` in 0..1.
        pixels: ramp width; 0 returns a copy.
    """
    if pixels <= 0:
        return mask.clone()
    sigma = pixels / 4.0
    k = 2 * math.ceil(2.0 * sigma) + 1
    eroded = grow(mask, -max(1, pixels // 2))
    soft = gaussian_blur2d(eroded, (k, k), (sigma, sigma), border_type="replicate")
    soft = (soft.clamp(0.0, 1.0) * mask).clamp(0.0, 1.0)
    thin = grow(eroded, max(1, pixels // 2) + 1) == 0
    return torch.where(thin, mask, soft)


def latent_mask(mask: Tensor, size: tuple, mode: str = "nearest") -> Tensor:
    """Downscale a pixel mask to the latent grid.

    Args:
        mask: :math:`(B, 1, H, W)`.
        size: latent (h, w).
        mode: ``nearest`` (diffusers: ``F.interpolate`` default), ``bilinear_round`` (ComfyUI's
            inpaint models: bilinear then round), ``any_pixel`` (A1111: a latent cell is masked if
            any of its pixels is, ``max_pool2d(mask > 0.5)``).
    """
    if mode == "nearest":
        return F.interpolate(mask, size=size, mode="nearest")
    if mode == "bilinear_round":
        return torch.round(F.interpolate(mask, size=size, mode="bilinear", align_corners=False))
    if mode == "any_pixel":
        binary = (mask > 0.5).to(mask.dtype)
        return F.adaptive_max_pool2d(binary, size)
    raise ValueError(f"latent mask downscale {mode!r} is not one of {LATENT_DOWNSCALES}")


def masked_image(image: Tensor, mask: Tensor, fill: str = "grey", threshold: float = 0.5) -> Tensor:
    r"""The image with masked pixels filled, for inpaint models' masked-image latent.

    Args:
        image: :math:`(B, C, H, W)` in 0..1.
        mask: :math:`(B \text{ or } 1, 1, H, W)`.
        fill: ``grey`` (0.5, as ComfyUI and diffusers) or ``original`` (keep the pixels).
        threshold: pixels with ``mask > threshold`` are filled (0.5 as ComfyUI's round and diffusers).
    """
    if fill == "original":
        return image.clone()
    if fill != "grey":
        raise ValueError(f"fill {fill!r} is not one of {FILLS}")
    keep = (mask <= threshold).to(image.dtype)
    return image * keep + 0.5 * (1.0 - keep)
