"""Crop box geometry: the mask's bounding box, padded, grown to the output aspect, kept inside the image.

The rule follows diffusers' ``VaeImageProcessor.get_crop_region`` (bounding box of the mask, pad,
grow to the target aspect, shift inside the image). Where that rule would have to leave the
image, the box keeps the aspect by giving up padding instead, as long as the mask still fits.
Every function also has a form taking a bounding box instead of a mask (islands, merged regions).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

__all__ = ["Box", "BBox", "mask_bbox", "diffusers_crop_region", "crop_box", "box_around", "long_side_size",
           "long_side_size_of", "snap"]

BBox = Tuple[int, int, int, int]
"""Half-open ``(x1, y1, x2, y2)``."""


class Box(NamedTuple):
    """A rectangle in pixels: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


def mask_bbox(mask: Tensor) -> Optional[Tuple[int, int, int, int]]:
    """Half-open ``(x1, y1, x2, y2)`` of the non-zero pixels of an ``(H, W)`` mask, None if empty."""
    ys = torch.nonzero(mask.amax(dim=1) > 0).flatten()
    if ys.numel() == 0:
        return None
    xs = torch.nonzero(mask.amax(dim=0) > 0).flatten()
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def _expand_axis(lo: int, hi: int, diff: int, limit: int) -> Tuple[int, int]:
    lo -= diff // 2
    hi += diff - diff // 2
    if hi >= limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        lo, hi = 0, hi - lo
    return lo, min(hi, limit)


def diffusers_crop_region(mask: Tensor, width: int, height: int, pad: int = 0) -> Tuple[int, int, int, int]:
    """diffusers' crop rule: bbox, pad, grow the short side to ``width / height``, shift inside.

    Args:
        mask: ``(H, W)``; any non-zero pixel counts.
        width: the processing width; the region takes the aspect ``width / height``.
        height: the processing height.
        pad: pixels added on each side before the aspect growth.

    Returns:
        Half-open ``(x1, y1, x2, y2)``; the whole image for an empty mask.
    """
    h_img, w_img = mask.shape
    return _region_around(mask_bbox(mask) or (0, 0, w_img, h_img), (h_img, w_img), width, height, pad)


def _region_around(bbox: BBox, size: Tuple[int, int], width: int, height: int, pad: int) -> BBox:
    h_img, w_img = size
    x1, y1 = max(bbox[0] - pad, 0), max(bbox[1] - pad, 0)
    x2, y2 = min(bbox[2] + pad, w_img), min(bbox[3] + pad, h_img)
    ratio = width / height
    if (x2 - x1) / (y2 - y1) > ratio:
        y1, y2 = _expand_axis(y1, y2, int((x2 - x1) / ratio - (y2 - y1)), h_img)
    else:
        x1, x2 = _expand_axis(x1, x2, int((y2 - y1) * ratio - (x2 - x1)), w_img)
    return x1, y1, x2, y2


def _place(centre: float, size: int, limit: int, lo: int, hi: int) -> int:
    """Start of a span of ``size`` near-centred at ``centre``, inside ``[0, limit)``, covering ``[lo, hi)``."""
    start = round(centre - size / 2)
    return int(min(max(start, max(0, hi - size)), min(lo, limit - size)))


def crop_box(mask: Tensor, pad: int, target: Optional[Tuple[int, int]], multiple: int = 8) -> Box:
    """The box to crop around ``mask``.

    Args:
        mask: ``(H, W)``, the union of the inpaint mask and any context mask.
        pad: context pixels around the mask's bounding box.
        target: output (height, width) whose aspect the box takes, or None to crop at native
            resolution with width and height snapped up to ``multiple``.
        multiple: size step for native-resolution boxes.

    Returns:
        A :class:`Box` inside the image containing the mask. An empty mask gives the whole image.
    """
    h_img, w_img = mask.shape
    bbox = mask_bbox(mask)
    if bbox is None:
        return Box(0, 0, w_img, h_img)
    return box_around(bbox, (h_img, w_img), pad, target, multiple)


def box_around(bbox: BBox, size: Tuple[int, int], pad: int, target: Optional[Tuple[int, int]],
               multiple: int = 8) -> Box:
    """:func:`crop_box` for a (non-empty) bounding box on an image of ``size`` (H, W)."""
    h_img, w_img = size
    if target is None:
        x1, y1 = max(bbox[0] - pad, 0), max(bbox[1] - pad, 0)
        x2, y2 = min(bbox[2] + pad, w_img), min(bbox[3] + pad, h_img)
        w = min(math.ceil((x2 - x1) / multiple) * multiple, w_img // multiple * multiple or w_img)
        h = min(math.ceil((y2 - y1) / multiple) * multiple, h_img // multiple * multiple or h_img)
        w, h = max(w, min(bbox[2] - bbox[0], w_img)), max(h, min(bbox[3] - bbox[1], h_img))
        return Box(_place((x1 + x2) / 2, w, w_img, bbox[0], bbox[2]),
                   _place((y1 + y2) / 2, h, h_img, bbox[1], bbox[3]), w, h)
    th, tw = target
    ratio = tw / th
    x1, y1, x2, y2 = _region_around(bbox, size, tw, th, pad)
    w, h = x2 - x1, y2 - y1
    if abs(w - h * ratio) <= max(1.0, ratio):  # the aspect holds to within one pixel step
        return Box(x1, y1, w, h)
    # Growing to the aspect would leave the image: keep the aspect, give up padding instead.
    mw, mh = bbox[2] - bbox[0], bbox[3] - bbox[1]
    h_fit = min(h_img, w_img / ratio)  # the tallest box of this aspect inside the image
    if h_fit < mh or h_fit * ratio < mw:
        return Box(x1, y1, w, h)  # no box of this aspect holds the mask: diffusers' clamped region
    h = int(h_fit)
    w = min(w_img, max(mw, round(h * ratio)))
    cx, cy = (bbox[0] + bbox[2]) / 2, (bbox[1] + bbox[3]) / 2
    return Box(_place(cx, w, w_img, bbox[0], bbox[2]), _place(cy, h, h_img, bbox[1], bbox[3]), w, h)


def long_side_size(mask: Tensor, pad: int, long_side: int, multiple: int) -> Tuple[int, int]:
    """Output (h, w) with the padded mask region's aspect, the long side ``long_side``, snapped to ``multiple``."""
    h_img, w_img = mask.shape
    return long_side_size_of(mask_bbox(mask) or (0, 0, w_img, h_img), (h_img, w_img), pad, long_side, multiple)


def long_side_size_of(bbox: BBox, size: Tuple[int, int], pad: int, long_side: int, multiple: int) -> Tuple[int, int]:
    """:func:`long_side_size` for a bounding box on an image of ``size`` (H, W)."""
    h_img, w_img = size
    bw = min(bbox[2] + pad, w_img) - max(bbox[0] - pad, 0)
    bh = min(bbox[3] + pad, h_img) - max(bbox[1] - pad, 0)
    scale = long_side / max(bw, bh)
    return snap(bh * scale, multiple), snap(bw * scale, multiple)


def snap(value: float, multiple: int) -> int:
    """Nearest positive multiple of ``multiple``."""
    return max(multiple, int(round(value / multiple)) * multiple)
