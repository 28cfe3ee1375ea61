"""The canvas a crop is planned on: outpaint extension, pre-resize, and the mask's preparation.

Inpaint-CropAndStitch (CAS) options, with this pack's exactness: the extension is edge-replicated
(corners too) and masked; the pre-resize only changes the frame the crop boxes are planned in, so
the paste goes back into the original pixels, never a resampled copy.
"""
from __future__ import annotations

import math
from typing import Literal, Tuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from .islands import fill_holes
from .masks import grow

__all__ = [
    "EXTEND_UNITS", "ExtendUnit", "PRERESIZE_MODES", "PreresizeMode", "MAX_SIDE",
    "extension_pixels", "extend", "preresize_size", "prepare_mask",
]

ExtendUnit = Literal["fraction of the side", "pixels"]
EXTEND_UNITS: Tuple[ExtendUnit, ...] = get_args(ExtendUnit)
PreresizeMode = Literal["off", "ensure minimum", "ensure maximum", "ensure minimum and maximum"]
PRERESIZE_MODES: Tuple[PreresizeMode, ...] = get_args(PreresizeMode)
MAX_SIDE = 16384  # ComfyUI's MAX_RESOLUTION: no canvas side may exceed it


def extension_pixels(size: Tuple[int, int], amounts: Tuple[float, float, float, float],
                     unit: ExtendUnit) -> Tuple[int, int, int, int]:
    """Pixels to add (top, bottom, left, right).

    Args:
        size: (H, W) of the image.
        amounts: per side, a fraction of that side's length (CAS's factor minus 1: 0.5 is CAS 1.5)
            or pixels.
        unit: ``fraction of the side`` or ``pixels``.

    Raises:
        ValueError: a negative or non-finite amount, or a canvas side beyond :data:`MAX_SIDE`.

    >>> extension_pixels((100, 60), (0.5, 0.0, 0.25, 1.0), "fraction of the side")
    (50, 0, 15, 60)
    """
    if unit not in EXTEND_UNITS:
        raise ValueError(f"extension unit {unit!r} is not one of {EXTEND_UNITS}")
    for a in amounts:
        if not math.isfinite(a) or a < 0:
            raise ValueError(f"extension {a} must be a finite amount >= 0 (the extension adds to the image)")
    h, w = size
    # CAS truncates the top and left amounts and gives the rounding remainder to the bottom and right.
    if unit == "pixels":
        out = tuple(int(round(a)) for a in amounts)
    else:
        top, left = int(h * amounts[0]), int(w * amounts[2])
        total_h, total_w = int(h * (1.0 + amounts[0] + amounts[1])), int(w * (1.0 + amounts[2] + amounts[3]))
        out = (top, total_h - h - top, left, total_w - w - left)
        out = tuple(max(0, v) for v in out)
    if h + out[0] + out[1] > MAX_SIDE or w + out[2] + out[3] > MAX_SIDE:
        raise ValueError(f"the extended canvas would be {w + out[2] + out[3]}x{h + out[0] + out[1]}, "
                         f"beyond {MAX_SIDE} px a side")
    return out


def extend(image: Tensor, pixels: Tuple[int, int, int, int], fill: str = "replicate") -> Tensor:
    """Add ``pixels`` (top, bottom, left, right) around ``image`` ``(B, C, H, W)``.

    Args:
        image: the image or mask.
        pixels: from :func:`extension_pixels`.
        fill: ``replicate`` (edge pixels, corners included; for images) or a number (for masks:
            1 marks the extension to be painted).
    """
    top, bottom, left, right = pixels
    if not any(pixels):
        return image.clone()
    if fill == "replicate":
        return F.pad(image, (left, right, top, bottom), mode="replicate")
    return F.pad(image, (left, right, top, bottom), value=float(fill))


def preresize_size(size: Tuple[int, int], mode: PreresizeMode, minimum: Tuple[int, int],
                   maximum: Tuple[int, int]) -> Tuple[int, int]:
    """The (H, W) CAS's pre-resize gives ``size``: aspect kept, scaled up to the minimum or down to the maximum.

    Upscaling rounds sizes up (so the minimum is met), downscaling truncates (so the maximum is).

    Args:
        size: (H, W).
        mode: one of :data:`PRERESIZE_MODES`.
        minimum: (H, W) the image must at least reach (``ensure minimum`` modes).
        maximum: (H, W) the image may at most reach (``ensure maximum`` modes).

    Raises:
        ValueError: both bounds at once cannot be met with the aspect kept.

    >>> preresize_size((300, 400), "ensure minimum", (1024, 1024), (16384, 16384))
    (1024, 1366)
    >>> preresize_size((3000, 4000), "ensure maximum", (1, 1), (1024, 1024))
    (768, 1024)
    """
    if mode not in PRERESIZE_MODES:
        raise ValueError(f"pre-resize mode {mode!r} is not one of {PRERESIZE_MODES}")
    h, w = size
    up = max(minimum[0] / h, minimum[1] / w)
    down = min(maximum[0] / h, maximum[1] / w)
    if mode == "off":
        return size
    if mode == "ensure minimum":
        scale = up if up > 1 else 1.0
    elif mode == "ensure maximum":
        scale = down if down < 1 else 1.0
    else:
        if up > 1 and down < 1:
            raise ValueError(f"a {w}x{h} image cannot reach at least {minimum[1]}x{minimum[0]} and at most "
                             f"{maximum[1]}x{maximum[0]} with its aspect kept")
        scale = up if up > 1 else down if down < 1 else 1.0
    if scale == 1.0:
        return size
    if scale > 1:
        return math.ceil(h * scale), math.ceil(w * scale)
    return max(1, int(h * scale)), max(1, int(w * scale))


def prepare_mask(mask: Tensor, fill: bool = False, expand: int = 0, invert: bool = False,
                 hipass: float = 0.0) -> Tensor:
    """CAS's mask steps, in its order: fill holes, expand, invert, hipass.

    Args:
        mask: ``(N, H, W)`` in 0..1.
        fill: fill holes (CAS's iterative threshold closing and filling; a ring becomes a disc).
        expand: grow by a disc of this radius in pixels (CAS grows by a square of about
            ``1.5 * expand / 4`` pixels; this pack's radius is the distance itself).
        invert: ``1 - mask``.
        hipass: values below it become 0.

    Returns:
        A new ``(N, H, W)`` tensor.
    """
    out = mask.clone()
    if fill:
        out = torch.stack([fill_holes(m) for m in out])
    if expand:
        out = grow(out[:, None], expand)[:, 0]
    if invert:
        out = 1.0 - out
    if hipass > 0:
        out = torch.where(out < hipass, torch.zeros_like(out), out)
    return out
