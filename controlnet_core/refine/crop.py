"""Padded crop around a mask and the exact paste back.

The crop box follows diffusers' ``VaeImageProcessor.get_crop_region`` (bounding box of the mask,
pad, grow to the target aspect, shift inside the image). Where that rule would have to leave the
image, the box keeps the aspect by giving up padding instead, as long as the mask still fits.
Paste resizes the generated crop back in float and blends it with weights that are 0 outside the
box; wherever a weight is 0 the original pixel is copied bit for bit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Literal, NamedTuple, Optional, Tuple, get_args

import torch
from torch import Tensor

from .masks import feather_inside
from .resample import ResampleFilter, resize

__all__ = [
    "PASTE_MODES", "PasteMode", "Box", "CropTransform", "mask_bbox", "diffusers_crop_region", "crop_box", "box_ramp",
    "long_side_size", "plan_crop", "crop", "paste", "paste_weights_for",
]


PasteMode = Literal["mask", "box"]
PASTE_MODES: Tuple[PasteMode, ...] = get_args(PasteMode)


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
    bbox = mask_bbox(mask) or (0, 0, w_img, h_img)
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
    x1, y1, x2, y2 = diffusers_crop_region(mask, tw, th, pad)
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


def box_ramp(h: int, w: int, feather: int, open_sides: Tuple[bool, bool, bool, bool] = (False,) * 4) -> Tensor:
    """Weights ``(1, 1, h, w)``: 1 inside, ramping linearly to 0 at the box edge over ``feather`` px.

    Args:
        h: box height.
        w: box width.
        feather: ramp width in pixels.
        open_sides: (left, top, right, bottom) sides on the image border, which get no ramp.
    """
    def axis(n: int, ramp_lo: bool, ramp_hi: bool) -> Tensor:
        i = torch.arange(n, dtype=torch.float32)
        lo = ((i + 1) / (feather + 1)).clamp(max=1.0) if ramp_lo and feather > 0 else torch.ones(n)
        hi = ((n - i) / (feather + 1)).clamp(max=1.0) if ramp_hi and feather > 0 else torch.ones(n)
        return torch.minimum(lo, hi)
    left, top, right, bottom = open_sides
    return (axis(h, not top, not bottom)[:, None] * axis(w, not left, not right)[None, :])[None, None]


@dataclass(frozen=True, eq=False)
class CropTransform:
    """Where crops came from and how to put them back (ComfyUI type ``CNR_CROP``).

    Attributes:
        image_size: (H, W) of the original image.
        boxes: one :class:`Box` per image, or one for the whole batch.
        output_size: (h, w) every crop is resized to.
        filter: resampling filter for crop and paste.
        paste_weights: per box, ``(1, 1, box.h, box.w)`` blend weights in 0..1.
        empty: per box, True when its mask was empty (paste then returns the original).
    """

    image_size: Tuple[int, int]
    boxes: Tuple[Box, ...]
    output_size: Tuple[int, int]
    filter: ResampleFilter
    paste_weights: Tuple[Tensor, ...]
    empty: Tuple[bool, ...]

    def box_for(self, index: int) -> int:
        """Index into :attr:`boxes` for image ``index`` (one box may serve the whole batch)."""
        return 0 if len(self.boxes) == 1 else index

    def scaled_box(self, index: int, size: Tuple[int, int]) -> Box:
        """The box for image ``index`` on an image of another ``size`` (e.g. a control hint)."""
        box = self.boxes[self.box_for(index)]
        if tuple(size) == tuple(self.image_size):
            return box
        sy, sx = size[0] / self.image_size[0], size[1] / self.image_size[1]
        # At least one pixel, inside the image: a box on the right or bottom edge of a larger
        # original must not round to an empty slice past the smaller image's edge.
        x, y = min(round(box.x * sx), size[1] - 1), min(round(box.y * sy), size[0] - 1)
        return Box(x, y, max(1, min(round((box.x + box.w) * sx), size[1]) - x),
                   max(1, min(round((box.y + box.h) * sy), size[0]) - y))


def _batch(n_images: int, transform: CropTransform) -> int:
    if len(transform.boxes) not in (1, n_images):
        raise ValueError(f"{len(transform.boxes)} crop boxes for a batch of {n_images} images; "
                         "use one crop for all images or one per image")
    return n_images


def crop(image: Tensor, transform: CropTransform, clamp: bool = True,
         on_item: Optional[Callable[[int], None]] = None) -> Tensor:
    """Cut each box out of ``image`` and resize it to the output size.

    Args:
        image: :math:`(B, C, H, W)`; a size other than the transform's scales the boxes.
        transform: where to cut, from :func:`plan_crop`.
        clamp: clamp to 0..1 after resampling (images and masks; bicubic/lanczos overshoot).
        on_item: called with each finished image's index (progress reporting).
    """
    out = []
    for i in range(_batch(image.shape[0], transform)):
        b = transform.scaled_box(i, tuple(image.shape[-2:]))
        piece = resize(image[i:i + 1, :, b.y:b.y + b.h, b.x:b.x + b.w], transform.output_size, transform.filter)
        out.append(piece.clamp(0.0, 1.0) if clamp else piece)
        if on_item is not None:
            on_item(i)
    return torch.cat(out)


def paste(original: Tensor, generated: Tensor, transform: CropTransform,
          weights: Optional[Tensor] = None, on_item: Optional[Callable[[int], None]] = None) -> Tensor:
    r"""Put generated crops back into the original image.

    Args:
        original: :math:`(1 \text{ or } N, C, H, W)`.
        generated: :math:`(N, C, h, w)` at the transform's output size (other sizes are resized).
        transform: where the crops came from, from :func:`plan_crop`.
        weights: optional blend weights :math:`(1 \text{ or } N, 1, h, w)` at crop resolution,
            replacing the transform's own (they are resized to each box).
        on_item: called with each finished image's index (progress reporting).

    Returns:
        :math:`(N, C, H, W)`; every pixel whose weight is 0 equals ``original`` exactly, and a
        generated crop equal to what :func:`crop` cut from ``original`` (an untouched crop) leaves
        the whole image exact, instead of passing it through two resamplings.
    """
    n = generated.shape[0]
    if original.shape[0] not in (1, n):
        raise ValueError(f"original batch {original.shape[0]} vs generated batch {n}: use 1 original or {n}")
    if tuple(original.shape[-2:]) != tuple(transform.image_size):
        raise ValueError(f"original image is {original.shape[-1]}x{original.shape[-2]} but the crop was made on "
                         f"{transform.image_size[1]}x{transform.image_size[0]}")
    _batch(n, transform)
    out = original.expand(n, *original.shape[1:]).clone()
    for i in range(n):
        _paste_one(out, i, generated, transform, weights)
        if on_item is not None:
            on_item(i)
    return out


def _paste_one(out: Tensor, i: int, generated: Tensor, transform: CropTransform, weights: Optional[Tensor]) -> None:
    k = transform.box_for(i)
    if transform.empty[k]:
        return
    b = transform.boxes[k]
    if tuple(generated.shape[-2:]) == tuple(transform.output_size) and torch.equal(
            generated[i:i + 1].to(out.dtype), crop(out[i:i + 1], _single(transform, k))):
        return
    gen = resize(generated[i:i + 1].to(out.dtype), (b.h, b.w), transform.filter).clamp(0.0, 1.0)
    if weights is None:
        w = transform.paste_weights[k]
    else:
        w = resize(weights[i if weights.shape[0] > 1 else 0][None].to(out.dtype), (b.h, b.w), "bilinear")
        w = w.clamp(0.0, 1.0) * (transform.paste_weights[k] > 0)
    w = w.to(device=out.device, dtype=out.dtype)
    region = out[i:i + 1, :, b.y:b.y + b.h, b.x:b.x + b.w]
    out[i:i + 1, :, b.y:b.y + b.h, b.x:b.x + b.w] = torch.where(w > 0, region + w * (gen - region), region)


def _single(transform: CropTransform, k: int) -> CropTransform:
    return replace(transform, boxes=(transform.boxes[k],), paste_weights=(transform.paste_weights[k],),
                   empty=(transform.empty[k],))


def paste_weights_for(mask: Tensor, box: Box, image_size: Tuple[int, int], mode: PasteMode, feather: int) -> Tensor:
    """Blend weights for one box: ``mask`` (the mask feathered inward) or ``box`` (the box, ramped edges).

    Args:
        mask: ``(H, W)`` inpaint mask at the original resolution.
        box: the crop box.
        image_size: (H, W) of the original image.
        mode: ``mask`` or ``box``.
        feather: ramp width in original pixels.
    """
    if mode == "box":
        h_img, w_img = image_size
        sides = (box.x == 0, box.y == 0, box.x + box.w == w_img, box.y + box.h == h_img)
        return box_ramp(box.h, box.w, feather, sides)
    if mode != "mask":
        raise ValueError(f"paste mode {mode!r} is not one of {PASTE_MODES}")
    region = mask[None, None, box.y:box.y + box.h, box.x:box.x + box.w].to(torch.float32)
    return feather_inside(region, feather)


def long_side_size(mask: Tensor, pad: int, long_side: int, multiple: int) -> Tuple[int, int]:
    """Output (h, w) with the padded mask region's aspect, the long side ``long_side``, snapped to ``multiple``."""
    h_img, w_img = mask.shape
    bbox = mask_bbox(mask) or (0, 0, w_img, h_img)
    bw = min(bbox[2] + pad, w_img) - max(bbox[0] - pad, 0)
    bh = min(bbox[3] + pad, h_img) - max(bbox[1] - pad, 0)
    scale = long_side / max(bw, bh)
    return snap(bh * scale, multiple), snap(bw * scale, multiple)


def snap(value: float, multiple: int) -> int:
    """Nearest positive multiple of ``multiple``."""
    return max(multiple, int(round(value / multiple)) * multiple)


def plan_crop(masks: Tensor, pad: int, output_size: Optional[Tuple[int, int]], multiple: int = 8,
              filter: ResampleFilter = "bicubic", paste_mode: PasteMode = "mask", feather: int = 16,
              context: Optional[Tensor] = None) -> CropTransform:
    r"""One crop box per mask, and how each is pasted back.

    Args:
        masks: :math:`(N, H, W)` inpaint masks (1 = repaint).
        pad: context pixels around each mask.
        output_size: (h, w) for every crop, or None for native resolution (needs N == 1).
        multiple: native boxes snap to it.
        filter: resampling filter.
        paste_mode: ``mask`` (blend the mask, feathered inward) or ``box`` (blend the box, edges ramped).
        feather: ramp width in original pixels.
        context: optional :math:`(1 \text{ or } N, H, W)` extra context area, included in the box only.
    """
    if output_size is None and masks.shape[0] > 1:
        raise ValueError("per-image masks need one output size for the batch")
    union = masks if context is None else torch.maximum(masks, context)
    size = tuple(masks.shape[-2:])
    boxes = tuple(crop_box(union[i], pad, output_size, multiple) for i in range(masks.shape[0]))
    weights = tuple(paste_weights_for(masks[i], b, size, paste_mode, feather) for i, b in enumerate(boxes))
    empty = tuple(mask_bbox(masks[i]) is None for i in range(masks.shape[0]))
    out = output_size if output_size is not None else (boxes[0].h, boxes[0].w)
    return CropTransform(size, boxes, tuple(out), filter, weights, empty)
