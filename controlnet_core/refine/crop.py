"""Crops cut at planned boxes, and the exact paste back.

Paste resizes the generated crop back in float and blends it with weights that are 0 outside the
box; wherever a weight is 0 the original pixel is copied bit for bit. A transform may plan its
boxes on a canvas that differs from the original image: extended for outpainting (the extension
edge-replicated) and pre-resized. Crops are cut from that canvas; pastes go back into the
original's own pixels (extended the same way), so pre-resizing never resamples untouched pixels.
In ``regions`` mode, one image gives several crops and all of them paste back into that image.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, List, Literal, Optional, Tuple, get_args

import torch
from torch import Tensor

from .boxes import Box, crop_box, diffusers_crop_region, long_side_size, mask_bbox, snap
from .canvas import extend
from .masks import feather_inside
from .resample import ResampleFilter, resize

__all__ = [
    "PASTE_MODES", "PasteMode", "Box", "CropTransform", "mask_bbox", "diffusers_crop_region", "crop_box", "box_ramp",
    "long_side_size", "plan_crop", "crop", "paste", "paste_weights_for", "snap",
]


PasteMode = Literal["mask", "box"]
PASTE_MODES: Tuple[PasteMode, ...] = get_args(PasteMode)


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
        boxes: per crop, a :class:`Box` in the planning frame (:attr:`frame`): one per image, or
            one for the whole batch; in ``regions`` mode one per region of the one image.
        output_size: (h, w) every crop is resized to.
        filter: resampling filter for crop and paste (the upscaling one when
            ``downscale_filter`` is set).
        paste_weights: per box, ``(1, 1, h, w)`` blend weights in 0..1 at :meth:`paste_box`.
        empty: per box, True when its mask was empty (paste then returns the original).
        regions: the boxes are regions of one image: crop ``k`` is box ``k``, and paste puts every
            crop back into that one image.
        extension: pixels (top, bottom, left, right) the canvas adds around the original,
            edge-replicated; paste returns the extended image.
        work_size: (H, W) the canvas is pre-resized to before cutting, or None.
        downscale_filter: filter for resizes that shrink, or None for ``filter``.
    """

    image_size: Tuple[int, int]
    boxes: Tuple[Box, ...]
    output_size: Tuple[int, int]
    filter: ResampleFilter
    paste_weights: Tuple[Tensor, ...]
    empty: Tuple[bool, ...]
    regions: bool = False
    extension: Tuple[int, int, int, int] = (0, 0, 0, 0)
    work_size: Optional[Tuple[int, int]] = None
    downscale_filter: Optional[ResampleFilter] = None

    @property
    def canvas_size(self) -> Tuple[int, int]:
        """(H, W) of the original with its extension: the size paste returns."""
        top, bottom, left, right = self.extension
        return self.image_size[0] + top + bottom, self.image_size[1] + left + right

    @property
    def frame(self) -> Tuple[int, int]:
        """(H, W) of the image :attr:`boxes` are measured on."""
        return tuple(self.work_size) if self.work_size is not None else self.canvas_size

    def filter_for(self, source: Tuple[int, int], target: Tuple[int, int]) -> ResampleFilter:
        """The filter for resizing ``source`` (h, w) to ``target``: ``filter`` if either side grows."""
        if target[0] > source[0] or target[1] > source[1] or self.downscale_filter is None:
            return self.filter
        return self.downscale_filter

    def box_for(self, index: int) -> int:
        """Index into :attr:`boxes` for crop ``index`` (one box may serve a whole batch)."""
        return 0 if len(self.boxes) == 1 else index

    def scaled_box(self, index: int, size: Tuple[int, int]) -> Box:
        """The box for crop ``index`` on an image of another ``size`` (e.g. a control hint)."""
        box = self.boxes[self.box_for(index)]
        frame = self.frame
        if tuple(size) == tuple(frame):
            return box
        sy, sx = size[0] / frame[0], size[1] / frame[1]
        # At least one pixel, inside the image: a box on the right or bottom edge of a larger
        # original must not round to an empty slice past the smaller image's edge.
        x, y = min(round(box.x * sx), size[1] - 1), min(round(box.y * sy), size[0] - 1)
        return Box(x, y, max(1, min(round((box.x + box.w) * sx), size[1]) - x),
                   max(1, min(round((box.y + box.h) * sy), size[0]) - y))

    def paste_box(self, index: int) -> Box:
        """Box ``index`` on the extended original, where its crop is pasted."""
        return self.scaled_box(index, self.canvas_size)

    def crops_of(self, n_images: int) -> List[Tuple[int, int]]:
        """(box index, source image index) for each crop cut from a batch of ``n_images``.

        Raises:
            ValueError: the batch fits neither one box for all, one per image, nor (regions) one
                image or one per region.
        """
        k = len(self.boxes)
        if self.regions:
            if n_images not in (1, k):
                raise ValueError(f"{n_images} images for a crop of {k} regions; give the one image, or one image "
                                 f"per region ({k})")
            return [(j, 0 if n_images == 1 else j) for j in range(k)]
        if k not in (1, n_images):
            raise ValueError(f"{k} crop boxes for a batch of {n_images} images; "
                             "use one crop for all images or one per image")
        return [(self.box_for(i), i) for i in range(n_images)]

    def canvas(self, image: Tensor) -> Tensor:
        """``image`` :math:`(B, C, H, W)` extended as the original was (edges replicated).

        An image of another size (a control hint) gets the extension scaled to its size.
        """
        ext = self.extension
        if any(ext) and tuple(image.shape[-2:]) != tuple(self.image_size):
            sy, sx = image.shape[-2] / self.image_size[0], image.shape[-1] / self.image_size[1]
            ext = (round(ext[0] * sy), round(ext[1] * sy), round(ext[2] * sx), round(ext[3] * sx))
        return extend(image, ext) if any(ext) else image


def _cut_frame(image: Tensor, transform: CropTransform) -> Tensor:
    """The image the boxes cut: the canvas, pre-resized when the image is the original's size."""
    canvas = transform.canvas(image)
    if transform.work_size is not None and tuple(image.shape[-2:]) == tuple(transform.image_size):
        size = tuple(transform.work_size)
        return resize(canvas, size, transform.filter_for(tuple(canvas.shape[-2:]), size))
    return canvas


def crop(image: Tensor, transform: CropTransform, clamp: bool = True,
         on_item: Optional[Callable[[int], None]] = None) -> Tensor:
    """Cut each box out of ``image`` and resize it to the output size.

    Args:
        image: :math:`(B, C, H, W)`; a size other than the transform's scales the boxes. In
            ``regions`` mode, one image (every region cut from it) or one per region.
        transform: where to cut, from :func:`plan_crop` or :func:`regions.plan`.
        clamp: clamp to 0..1 after resampling (images and masks; bicubic/lanczos overshoot).
        on_item: called with each finished crop's index (progress reporting).
    """
    plan = transform.crops_of(image.shape[0])
    sources = sorted({s for _, s in plan})
    frames = {s: _cut_frame(image[s:s + 1], transform) for s in sources} if len(sources) < len(plan) else {}
    out = []
    for i, (k, s) in enumerate(plan):
        frame = frames[s] if s in frames else _cut_frame(image[s:s + 1], transform)
        b = transform.scaled_box(k, tuple(frame.shape[-2:]))
        cut = frame[:, :, b.y:b.y + b.h, b.x:b.x + b.w]
        piece = resize(cut, transform.output_size, transform.filter_for((b.h, b.w), transform.output_size))
        out.append(piece.clamp(0.0, 1.0) if clamp else piece)
        if on_item is not None:
            on_item(i)
    return torch.cat(out)


Harmonizer = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(generated, original, weights) -> generated``: all ``(1, C, h, w)`` / ``(1, 1, h, w)`` at the paste box."""


def paste(original: Tensor, generated: Tensor, transform: CropTransform,
          weights: Optional[Tensor] = None, on_item: Optional[Callable[[int], None]] = None,
          harmonize: Optional[Harmonizer] = None) -> Tensor:
    r"""Put generated crops back into the original image.

    Args:
        original: :math:`(1 \text{ or } N, C, H, W)`; in ``regions`` mode :math:`(1, C, H, W)`.
        generated: :math:`(N, C, h, w)` at the transform's output size (other sizes are resized).
        transform: where the crops came from.
        weights: optional blend weights :math:`(1 \text{ or } N, 1, h, w)` at crop resolution,
            replacing the transform's own (they are resized to each box, and stay 0 where the
            transform's are).
        on_item: called with each finished crop's index (progress reporting).
        harmonize: optional colour correction applied to each resized crop before blending
            (e.g. :func:`harmony.match_seam`); it sees the original under the box and the weights.

    Returns:
        :math:`(N, C, H', W')` (:math:`(1, C, H', W')` for regions), at the canvas size (the
        original plus any outpaint extension). Every pixel whose weight is 0 equals the
        (extended) original exactly, and a generated crop equal to what :func:`crop` cut from
        ``original`` (an untouched crop) leaves its box exact, instead of passing it through two
        resamplings. In ``regions`` mode the boxes do not overlap, so each crop pastes as it would alone.
    """
    n = generated.shape[0]
    if tuple(original.shape[-2:]) != tuple(transform.image_size):
        raise ValueError(f"original image is {original.shape[-1]}x{original.shape[-2]} but the crop was made on "
                         f"{transform.image_size[1]}x{transform.image_size[0]}")
    if transform.regions:
        if original.shape[0] != 1:
            raise ValueError(f"a crop of regions pastes into one original; got a batch of {original.shape[0]}")
        if n != len(transform.boxes):
            raise ValueError(f"{n} generated crops for a crop of {len(transform.boxes)} regions: give one per region")
        jobs = [(j, j, 0, 0) for j in range(n)]  # (crop, box, source original, output image)
        n_out = 1
    else:
        if original.shape[0] not in (1, n):
            raise ValueError(f"original batch {original.shape[0]} vs generated batch {n}: use 1 original or {n}")
        jobs = [(i, k, 0 if original.shape[0] == 1 else i, i) for i, (k, _) in enumerate(transform.crops_of(n))]
        n_out = n
    canvas = transform.canvas(original)
    out = canvas.expand(n_out, *canvas.shape[1:]).clone()
    for j, k, s, o in jobs:
        if not transform.empty[k]:
            _paste_one(out[o:o + 1], generated[j:j + 1], original[s:s + 1], transform, k,
                       None if weights is None else weights[j if weights.shape[0] > 1 else 0][None], harmonize)
        if on_item is not None:
            on_item(j)
    return out


def _paste_one(out: Tensor, generated: Tensor, original: Tensor, transform: CropTransform, k: int,
               weights: Optional[Tensor], harmonize: Optional[Harmonizer]) -> None:
    b = transform.paste_box(k)
    generated = generated.to(out.dtype)
    if tuple(generated.shape[-2:]) == tuple(transform.output_size) and torch.equal(
            generated, crop(original, _single(transform, k))):
        return
    gen = resize(generated, (b.h, b.w), transform.filter_for(tuple(generated.shape[-2:]), (b.h, b.w)))
    gen = gen.clamp(0.0, 1.0)
    if weights is None:
        w = transform.paste_weights[k]
    else:
        w = resize(weights.to(out.dtype), (b.h, b.w), "bilinear")
        w = w.clamp(0.0, 1.0) * (transform.paste_weights[k].to(w.device) > 0)
    w = w.to(device=out.device, dtype=out.dtype)
    region = out[:, :, b.y:b.y + b.h, b.x:b.x + b.w]
    if harmonize is not None:
        gen = harmonize(gen, region, w)
    out[:, :, b.y:b.y + b.h, b.x:b.x + b.w] = torch.where(w > 0, region + w * (gen - region), region)


def _single(transform: CropTransform, k: int) -> CropTransform:
    return replace(transform, boxes=(transform.boxes[k],), paste_weights=(transform.paste_weights[k],),
                   empty=(transform.empty[k],), regions=False)


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
