"""Planning crops: one per mask, or one per region of one image (islands of a mask, or a batch of masks).

Regions whose crop boxes overlap merge into one crop, until no two boxes overlap: every crop then
pastes into pixels no other crop touches, so pasting all of them equals pasting each alone.
Islands are found on the original canvas (before any pre-resize), and their boxes map to the
planning frame rounded outward, so an island smaller than a pixel after the pre-resize still gets
a crop that holds it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import List, Literal, Optional, Sequence, Tuple, get_args

import torch
from torch import Tensor

from .boxes import BBox, Box, box_around, long_side_size_of, mask_bbox
from .canvas import MAX_SIDE, PreresizeMode, extend, prepare_mask, preresize_size
from .crop import CropTransform, PasteMode, paste_weights_for
from .islands import islands_with_bboxes
from .resample import ResampleFilter

__all__ = ["REGION_MODES", "RegionMode", "MAX_REGIONS", "CropSpec", "Plan", "TooManyRegions", "plan",
           "grow_bbox", "merge_overlapping"]

RegionMode = Literal["single", "islands", "mask batch"]
REGION_MODES: Tuple[RegionMode, ...] = get_args(RegionMode)
MAX_REGIONS = 64
"""Crops one plan may hold: each is a sampler batch row, so more would exhaust memory quietly."""


MAX_ISLANDS_TO_MERGE = 4096
"""Merging compares every pair of boxes; beyond this many islands that alone would take minutes."""


class TooManyRegions(ValueError):
    """More regions than :attr:`CropSpec.max_regions` remain after merging (or too many to merge)."""

    def __init__(self, count: int, cap: int, merged: bool = True):
        where = "after merging overlapping ones" if merged else f"(over {MAX_ISLANDS_TO_MERGE}, too many to merge)"
        super().__init__(f"{count} separate regions {where}; at most {cap} crops fit one batch")
        self.count, self.cap = count, cap


@dataclass(frozen=True)
class CropSpec:
    """How to plan crops; the defaults are this pack's (not Inpaint-CropAndStitch's).

    Attributes:
        pad: context pixels around each region's bounding box (planning frame).
        output_size: (h, w) of every crop, or None for ``long_side`` or native resolution.
        long_side: with ``output_size`` None, the crop's long side (aspect of the largest region).
        multiple: sizes snap to it.
        filter: resampling filter (used when growing; and when shrinking unless ``downscale_filter``).
        downscale_filter: resampling filter when shrinking, or None.
        paste_mode: ``mask`` or ``box``.
        feather: paste ramp in original pixels.
        regions: ``single`` (one crop per mask), ``islands`` or ``mask batch``.
        fill_holes, expand, invert, hipass: mask preparation (:func:`canvas.prepare_mask`).
        context_factor: each region's bounding box grows to this factor of its size (CAS's
            ``context_from_mask_extend_factor``; 1 = none) before padding.
        extension: outpaint pixels (top, bottom, left, right), edge-replicated and masked.
        preresize, preresize_min, preresize_max: the planning frame (:func:`canvas.preresize_size`
            of the extended canvas).
        max_regions: cap on crops in the regions modes.
    """

    pad: int = 32
    output_size: Optional[Tuple[int, int]] = (512, 512)
    long_side: Optional[int] = None
    multiple: int = 8
    filter: ResampleFilter = "bicubic"
    downscale_filter: Optional[ResampleFilter] = None
    paste_mode: PasteMode = "mask"
    feather: int = 16
    regions: RegionMode = "single"
    fill_holes: bool = False
    expand: int = 0
    invert: bool = False
    hipass: float = 0.0
    context_factor: float = 1.0
    extension: Tuple[int, int, int, int] = (0, 0, 0, 0)
    preresize: PreresizeMode = "off"
    preresize_min: Tuple[int, int] = (1024, 1024)
    preresize_max: Tuple[int, int] = (MAX_SIDE, MAX_SIDE)
    max_regions: int = MAX_REGIONS


@dataclass(frozen=True, eq=False)
class Plan:
    """A planned crop.

    Attributes:
        transform: the :class:`CropTransform`.
        masks: ``(1 or K, H', W')`` the prepared masks on the extended canvas: cropping them with
            ``transform`` gives each crop's mask.
        found: regions found before merging (islands, or masks), 0 for an empty mask.
    """

    transform: CropTransform
    masks: Tensor
    found: int


def grow_bbox(bbox: BBox, size: Tuple[int, int], factor: float) -> BBox:
    """CAS's context growth: each side moves out by ``round(side * (factor - 1) / 2)``, clamped to the image.

    >>> grow_bbox((10, 10, 30, 20), (100, 100), 1.5)
    (5, 8, 35, 22)
    """
    if factor == 1.0:
        return bbox
    x1, y1, x2, y2 = bbox
    gx, gy = round((x2 - x1) * (factor - 1.0) / 2.0), round((y2 - y1) * (factor - 1.0) / 2.0)
    return max(x1 - gx, 0), max(y1 - gy, 0), min(x2 + gx, size[1]), min(y2 + gy, size[0])


def _union(a: Optional[BBox], b: Optional[BBox]) -> Optional[BBox]:
    if a is None or b is None:
        return a or b
    return min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])


def _to_frame(bbox: BBox, canvas: Tuple[int, int], frame: Tuple[int, int]) -> BBox:
    """A canvas bbox on the planning frame, rounded outward so it keeps at least one pixel."""
    if tuple(canvas) == tuple(frame):
        return bbox
    sy, sx = frame[0] / canvas[0], frame[1] / canvas[1]
    x1, y1 = min(math.floor(bbox[0] * sx), frame[1] - 1), min(math.floor(bbox[1] * sy), frame[0] - 1)
    return x1, y1, max(x1 + 1, min(math.ceil(bbox[2] * sx), frame[1])), max(y1 + 1, min(math.ceil(bbox[3] * sy),
                                                                                        frame[0]))


def _finder(parent: List[int]):
    """Union-find root lookup (with path halving) over ``parent``."""
    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    return root


def merge_overlapping(bboxes: Sequence[BBox], box_of) -> Tuple[List[BBox], List[List[int]], List[Box]]:
    """Merge regions whose boxes overlap, until none do.

    Args:
        bboxes: per region, its bounding box on the planning frame.
        box_of: bbox -> :class:`Box` (the crop box rule).

    Returns:
        (merged bboxes, the member region indices of each, their boxes), in order of each
        group's first member.
    """
    groups = [[i] for i in range(len(bboxes))]
    merged = list(bboxes)
    boxes = [box_of(b) for b in merged]
    while True:
        parent = list(range(len(boxes)))
        root = _finder(parent)
        if len(boxes) > 1:
            t = torch.tensor([[b.x, b.y, b.x + b.w, b.y + b.h] for b in boxes])
            hit = ((t[:, None, 0] < t[None, :, 2]) & (t[None, :, 0] < t[:, None, 2])
                   & (t[:, None, 1] < t[None, :, 3]) & (t[None, :, 1] < t[:, None, 3])).triu(1)
            for i, j in torch.nonzero(hit).tolist():
                parent[root(j)] = root(i)
        roots = [root(i) for i in range(len(boxes))]
        if len(set(roots)) == len(boxes):
            return merged, groups, boxes
        order = list(dict.fromkeys(roots))
        new_bboxes, new_groups = [], []
        for r in order:
            members = [i for i in range(len(boxes)) if roots[i] == r]
            bb = None
            for i in members:
                bb = _union(bb, merged[i])
            new_bboxes.append(bb)
            new_groups.append(sorted(m for i in members for m in groups[i]))
        merged, groups = new_bboxes, new_groups
        boxes = [box_of(b) for b in merged]


def _region_bboxes(spec: CropSpec, masks: Tensor, context: Optional[Tensor]) -> List[Optional[BBox]]:
    """Per region, its canvas bbox (mask part grown by the context factor, with its context)."""
    size = tuple(masks.shape[-2:])
    if spec.regions == "islands":
        if masks.shape[0] != 1:
            raise ValueError("islands mode splits one mask; give one mask (or use 'mask batch')")
        joint = masks[0] > 0
        if context is not None:
            joint = joint | (context[0] > 0)
        labels, n, whole = islands_with_bboxes(joint.to(torch.float32), 8, paint=context is not None)
        if context is None:
            return [grow_bbox(tuple(b), size, spec.context_factor) for b in whole.tolist()]
        # Islands of the mask inside one joint island share it; context-only islands are dropped.
        ys, xs = torch.nonzero(masks[0] > 0, as_tuple=True)
        lab = labels[ys, xs] - 1
        part = torch.stack([
            torch.full((n,), size[1], device=lab.device).scatter_reduce(0, lab, xs, "amin"),
            torch.full((n,), size[0], device=lab.device).scatter_reduce(0, lab, ys, "amin"),
            torch.full((n,), -1, device=lab.device).scatter_reduce(0, lab, xs + 1, "amax"),
            torch.full((n,), -1, device=lab.device).scatter_reduce(0, lab, ys + 1, "amax")], 1)
        return [_union(grow_bbox(tuple(p), size, spec.context_factor), tuple(w))
                for p, w in zip(part.tolist(), whole.tolist()) if p[2] >= 0]
    out = []
    for i in range(masks.shape[0]):
        bb = mask_bbox(masks[i])
        bb = None if bb is None else grow_bbox(bb, size, spec.context_factor)
        if context is not None:
            bb = _union(bb, mask_bbox(context[i if context.shape[0] > 1 else 0]))
        out.append(bb)
    return out


def plan(masks: Tensor, spec: CropSpec = CropSpec(), context: Optional[Tensor] = None) -> Plan:
    r"""Plan crops for ``masks`` on their image.

    Args:
        masks: :math:`(N, H, W)` inpaint masks (1 = repaint), before preparation.
        spec: the options.
        context: optional :math:`(1 \text{ or } N, H, W)` extra context area, included in boxes only.

    Returns:
        A :class:`Plan`. In ``single`` mode, one box per mask (an empty mask gives the whole
        frame, flagged empty). In the regions modes, one box per merged region; no region (an
        empty mask) gives one empty crop of the whole frame, which pastes back as the original.

    Raises:
        TooManyRegions: more than ``spec.max_regions`` regions after merging.
        ValueError: settings that cannot work together (named in the message).
    """
    regions = spec.regions != "single"
    if spec.output_size is None and spec.long_side is None and (regions or masks.shape[0] > 1):
        raise ValueError("several crops need one output size for the batch: set an output size or a long side")
    prepared = prepare_mask(masks, spec.fill_holes, spec.expand, spec.invert, spec.hipass)
    canvas_masks = extend(prepared[:, None], spec.extension, fill=1.0)[:, 0]
    canvas_context = None if context is None else extend(context[:, None], spec.extension, fill=0.0)[:, 0]
    canvas = tuple(canvas_masks.shape[-2:])
    frame = preresize_size(canvas, spec.preresize, spec.preresize_min, spec.preresize_max)
    work_size = None if frame == canvas else frame
    bboxes = _region_bboxes(spec, canvas_masks, canvas_context)
    found = sum(b is not None for b in bboxes) if regions else len(bboxes)
    if regions:
        bboxes = [b for b in bboxes if b is not None]
    framed = [None if b is None else _to_frame(b, canvas, frame) for b in bboxes]
    out_size = spec.output_size
    if out_size is None and spec.long_side is not None:
        sized = [b for b in framed if b is not None] or [(0, 0, frame[1], frame[0])]
        largest = max(sized, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        out_size = long_side_size_of(largest, frame, spec.pad, spec.long_side, spec.multiple)

    def box_of(bb: Optional[BBox]) -> Box:
        return Box(0, 0, frame[1], frame[0]) if bb is None else box_around(bb, frame, spec.pad, out_size,
                                                                          spec.multiple)
    if regions and len(framed) > MAX_ISLANDS_TO_MERGE:
        raise TooManyRegions(len(framed), spec.max_regions, merged=False)
    if regions and framed:
        _, groups, boxes = merge_overlapping(framed, box_of)
        if len(boxes) > spec.max_regions:
            raise TooManyRegions(len(boxes), spec.max_regions)
    else:
        groups, boxes = [[i] for i in range(len(framed))], [box_of(b) for b in framed]
    if regions and not boxes:
        groups, boxes = [[]], [box_of(None)]
    empty = tuple(not g or (not regions and mask_bbox(canvas_masks[g[0]]) is None) for g in groups)
    if spec.regions == "mask batch":
        blank = torch.zeros(canvas, dtype=masks.dtype, device=masks.device)
        crop_masks = torch.stack([canvas_masks[g].amax(0) if g else blank for g in groups])
    else:
        crop_masks = canvas_masks
    out = out_size if out_size is not None else (boxes[0].h, boxes[0].w)
    transform = CropTransform(tuple(masks.shape[-2:]), tuple(boxes), tuple(out), spec.filter, (), empty,
                              regions=regions, extension=tuple(spec.extension), work_size=work_size,
                              downscale_filter=spec.downscale_filter)
    weights = tuple(paste_weights_for(crop_masks[k if crop_masks.shape[0] > 1 else 0], transform.paste_box(k),
                                      canvas, spec.paste_mode, spec.feather) for k in range(len(boxes)))
    return Plan(replace(transform, paste_weights=weights), crop_masks, found)
