"""Connected islands of a mask, their bounding boxes, and hole filling built on them.

Labelling runs in torch on the mask's own device and works on runs (stretches of set pixels
along a row), not pixels: touching runs of neighbouring rows are found with one sorted search,
then labels spread over those pairs and jump along the chain of labels they point to. A few
rectangles on a large image are a few hundred runs, not millions of pixels.
"""
from __future__ import annotations

from typing import Literal, Optional, Tuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["CONNECTIVITIES", "Connectivity", "label_islands", "islands_with_bboxes", "island_bboxes", "fill_holes",
           "CAS_HOLE_THRESHOLDS"]

Connectivity = Literal[4, 8]
CONNECTIVITIES: Tuple[Connectivity, ...] = get_args(Connectivity)

# Inpaint-CropAndStitch fills holes at these levels, highest first, so a soft ring fills to its own level.
CAS_HOLE_THRESHOLDS = (1.0, 0.99, 0.97, 0.95, 0.93, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)


class _Runs:
    """The runs of set pixels along each row: row, first column, end column (exclusive)."""

    def __init__(self, fg: Tensor):
        starts, ends = fg.clone(), fg.clone()
        starts[:, 1:] &= ~fg[:, :-1]
        ends[:, :-1] &= ~fg[:, 1:]
        self.row, self.x0 = torch.nonzero(starts, as_tuple=True)
        self.x1 = torch.nonzero(ends, as_tuple=True)[1] + 1
        self.shape, self.width = fg.shape, fg.shape[1]

    def __len__(self) -> int:
        return int(self.row.numel())

    def edges(self, connectivity: int) -> Tuple[Tensor, Tensor]:
        """Pairs of runs on neighbouring rows that touch (share a column, or a corner for 8)."""
        stride = self.width + 2
        reach = 1 if connectivity == 8 else 0
        key_start, key_end = self.row * stride + self.x0, self.row * stride + self.x1
        below = (self.row + 1) * stride
        # Runs are sorted by row, then column, so the touching runs of the next row are one range.
        lo = torch.searchsorted(key_end, below + self.x0 - reach, right=True)
        hi = torch.searchsorted(key_start, below + self.x1 + reach, right=False)
        count = (hi - lo).clamp(min=0)
        src = torch.repeat_interleave(torch.arange(len(self), device=count.device), count)
        offset = torch.arange(int(count.sum()), device=count.device) - torch.repeat_interleave(
            torch.cumsum(count, 0) - count, count)
        return src, torch.repeat_interleave(lo, count) + offset

    def paint(self, run_labels: Tensor, only: Optional[Tensor] = None) -> Tensor:
        """A per-pixel map: each pixel of a run (of the runs flagged in ``only``) gets its run's label.

        Every other pixel is 0. Costs as much as the painted pixels, not the image.
        """
        keep = torch.ones_like(self.row, dtype=torch.bool) if only is None else only
        row, x0, length = self.row[keep], self.x0[keep], (self.x1 - self.x0)[keep]
        total = int(length.sum())
        offset = torch.arange(total, device=row.device) - torch.repeat_interleave(torch.cumsum(length, 0) - length,
                                                                                   length)
        flat = torch.repeat_interleave(row * self.width + x0, length) + offset
        out = torch.zeros(self.shape[0] * self.shape[1], dtype=torch.int64, device=row.device)
        out[flat] = torch.repeat_interleave(run_labels[keep], length)
        return out.view(self.shape)


def _component_of_runs(runs: _Runs, connectivity: int) -> Tuple[Tensor, int]:
    """Per run, its island 0..n-1 in the order of each island's first run."""
    n_runs = len(runs)
    lab = torch.arange(n_runs, device=runs.row.device)
    src, dst = runs.edges(connectivity)
    while src.numel():
        new = lab.clone()
        new.scatter_reduce_(0, src, lab[dst], reduce="amin")
        new.scatter_reduce_(0, dst, lab[src], reduce="amin")
        for _ in range(4):  # follow the chain of labels: each points to a run of the same island
            new = new[new]
        if torch.equal(new, lab):
            break
        lab = new
    roots, inverse = torch.unique(lab, return_inverse=True)
    return inverse, int(roots.numel())


def label_islands(mask: Tensor, connectivity: Connectivity = 8) -> Tuple[Tensor, int]:
    """Label the connected islands of ``mask > 0``.

    Args:
        mask: ``(H, W)``; any value above 0 is part of an island.
        connectivity: 8 (diagonal neighbours join islands) or 4.

    Returns:
        ``(labels, n)``: ``(H, W)`` int64 labels, 0 for background and 1..n for the islands,
        numbered in row-major order of each island's first pixel.

    >>> m = torch.tensor([[1., 0., 1.], [0., 1., 0.], [1., 0., 0.]])
    >>> label_islands(m, 4)[1], label_islands(m, 8)[1]
    (4, 1)
    """
    labels, n, _ = islands_with_bboxes(mask, connectivity)
    return labels, n


def islands_with_bboxes(mask: Tensor, connectivity: Connectivity = 8,
                        paint: bool = True) -> Tuple[Optional[Tensor], int, Tensor]:
    """:func:`label_islands` plus each island's half-open ``(x1, y1, x2, y2)``, ``(n, 4)`` int64.

    With ``paint=False`` the label map is not drawn (None): the boxes alone cost only the runs.
    """
    if connectivity not in CONNECTIVITIES:
        raise ValueError(f"connectivity {connectivity!r} is not one of {CONNECTIVITIES}")
    runs = _Runs(mask > 0)
    if len(runs) == 0:
        return torch.zeros(mask.shape, dtype=torch.int64, device=mask.device), 0, \
            torch.zeros(0, 4, dtype=torch.int64, device=mask.device)
    run_island, n = _component_of_runs(runs, connectivity)
    h, w = mask.shape
    dev = mask.device
    boxes = torch.stack([
        torch.full((n,), w, device=dev).scatter_reduce(0, run_island, runs.x0, "amin"),
        torch.full((n,), h, device=dev).scatter_reduce(0, run_island, runs.row, "amin"),
        torch.zeros(n, dtype=torch.int64, device=dev).scatter_reduce(0, run_island, runs.x1, "amax"),
        torch.zeros(n, dtype=torch.int64, device=dev).scatter_reduce(0, run_island, runs.row + 1, "amax"),
    ], dim=1)
    return (runs.paint(run_island + 1) if paint else None), n, boxes


def island_bboxes(labels: Tensor, n: int) -> Tensor:
    """Half-open ``(x1, y1, x2, y2)`` per island, ``(n, 4)`` int64, row ``i`` for label ``i + 1``."""
    h, w = labels.shape
    fg = labels > 0
    ys, xs = torch.nonzero(fg, as_tuple=True)
    lab = labels[fg] - 1
    out = torch.empty(4, n, dtype=torch.int64, device=labels.device)
    out[0] = torch.full((n,), w, device=labels.device).scatter_reduce(0, lab, xs, "amin")
    out[1] = torch.full((n,), h, device=labels.device).scatter_reduce(0, lab, ys, "amin")
    out[2] = torch.zeros(n, dtype=torch.int64, device=labels.device).scatter_reduce(0, lab, xs + 1, "amax")
    out[3] = torch.zeros(n, dtype=torch.int64, device=labels.device).scatter_reduce(0, lab, ys + 1, "amax")
    return out.T.contiguous()


def _binary_closing(binary: Tensor, border: Tuple[bool, bool, bool, bool]) -> Tensor:
    """3x3 closing of a binary map.

    Beyond the sides flagged in ``border`` (left, top, right, bottom) counts as set (scipy's
    ``border_value=1`` at the image border), beyond the others as unset.
    """
    left, top, right, bottom = border
    x = F.pad(binary[None, None].to(torch.float32), (1, 1, 1, 1), value=0.0)
    for flag, index in ((left, (..., slice(None), 0)), (right, (..., slice(None), -1)),
                        (top, (..., 0, slice(None))), (bottom, (..., -1, slice(None)))):
        if flag:
            x[index] = 1.0
    dilated = F.max_pool2d(x, 3, stride=1)
    padded = F.pad(dilated, (1, 1, 1, 1), value=0.0)
    for flag, index in ((left, (..., slice(None), 0)), (right, (..., slice(None), -1)),
                        (top, (..., 0, slice(None))), (bottom, (..., -1, slice(None)))):
        if flag:
            padded[index] = 1.0
    eroded = -F.max_pool2d(-padded, 3, stride=1)
    return eroded[0, 0] > 0.5


def _fill_binary_holes(binary: Tensor) -> Tensor:
    """``binary`` plus every unset area that does not reach the border (4-connected, as scipy's)."""
    runs = _Runs(~binary)
    if len(runs) == 0:
        return binary.clone()
    island, n = _component_of_runs(runs, 4)
    h, w = binary.shape
    on_border = (runs.row == 0) | (runs.row == h - 1) | (runs.x0 == 0) | (runs.x1 == w)
    open_island = torch.zeros(n, dtype=torch.bool, device=binary.device)
    open_island[island[on_border]] = True
    holes = runs.paint(torch.ones_like(island), only=~open_island[island])
    return binary | (holes > 0)


def fill_holes(mask: Tensor, thresholds: Tuple[float, ...] = CAS_HOLE_THRESHOLDS) -> Tensor:
    """Fill the holes of a soft mask as Inpaint-CropAndStitch does: a ring becomes a disc.

    For each threshold, highest first: the pixels ``>= threshold`` are closed (3x3, the image's
    outside counted as set), their holes filled, and every filled pixel raised to at least the
    threshold. Only the set pixels' bounding box plus a 2-pixel margin is processed: closing
    changes nothing further out, and the margin joins every open area to the outside.

    Args:
        mask: ``(H, W)`` in 0..1.
        thresholds: the levels, highest first.

    Returns:
        ``(H, W)``, never below ``mask``.
    """
    out = mask.clone()
    h, w = mask.shape
    previous = None
    for threshold in thresholds:
        binary = out >= threshold
        # The same pixels as the last pass fill the same holes, already raised above this level.
        if previous is not None and torch.equal(binary, previous):
            continue
        previous = binary
        rows = torch.nonzero(binary.any(dim=1)).flatten()
        if rows.numel():
            cols = torch.nonzero(binary.any(dim=0)).flatten()
            y0, y1 = max(int(rows[0]) - 2, 0), min(int(rows[-1]) + 3, h)
            x0, x1 = max(int(cols[0]) - 2, 0), min(int(cols[-1]) + 3, w)
        elif min(h, w) <= 2:  # every pixel touches the border, counted as set: closing sets them all
            y0, y1, x0, x1 = 0, h, 0, w
        else:
            continue
        closed = _binary_closing(binary[y0:y1, x0:x1], (x0 == 0, y0 == 0, x1 == w, y1 == h))
        filled = _fill_binary_holes(closed)
        region = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = torch.maximum(region, torch.where(filled, torch.full_like(region, threshold),
                                                               torch.zeros_like(region)))
    return out
