"""Float resampling with a choice of filter, as separable weight matrices (no 8-bit round trip)."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable, Dict, Literal, Tuple, get_args

import torch
from torch import Tensor

__all__ = ["RESAMPLE_FILTERS", "ResampleFilter", "resize"]


def _triangle(x: Tensor) -> Tensor:
    return (1.0 - x.abs()).clamp(min=0.0)


def _cubic(x: Tensor, a: float = -0.5) -> Tensor:
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _lanczos3(x: Tensor) -> Tensor:
    return torch.where(x.abs() < 3, torch.sinc(x) * torch.sinc(x / 3), torch.zeros_like(x))


# filter -> (kernel, support radius in source pixels at scale 1); "area" is exact box overlap
_FILTERS: Dict[str, Tuple[Callable[[Tensor], Tensor], float]] = {
    "bicubic": (_cubic, 2.0), "bilinear": (_triangle, 1.0), "lanczos": (_lanczos3, 3.0),
}
ResampleFilter = Literal["bicubic", "bilinear", "lanczos", "area", "nearest"]
RESAMPLE_FILTERS: Tuple[ResampleFilter, ...] = get_args(ResampleFilter)
"""``area`` averages exactly when shrinking and repeats pixels (nearest) when enlarging."""


@lru_cache(maxsize=64)
def _weights(size_in: int, size_out: int, name: str, device: torch.device, dtype=torch.float64) -> Tensor:
    """``(size_out, size_in)`` matrix mapping a row of source pixels to output pixels.

    Pixel centres map as in PIL: ``src = (dst + 0.5) * size_in / size_out - 0.5``; when shrinking,
    the kernel is widened by the scale so every source pixel contributes (antialiasing).
    """
    scale = size_in / size_out
    centres = (torch.arange(size_out, device=device, dtype=dtype) + 0.5) * scale - 0.5
    if name == "nearest" or (name == "area" and size_out >= size_in):
        idx = torch.floor((torch.arange(size_out, device=device, dtype=dtype) + 0.5) * scale).long()
        idx = idx.clamp(max=size_in - 1)
        return torch.nn.functional.one_hot(idx, size_in).to(dtype)
    kernel, support = _FILTERS.get(name, (None, 0.0))
    stretch = max(scale, 1.0)
    src = torch.arange(size_in, device=device, dtype=dtype)
    dist = (src[None, :] - centres[:, None]) / stretch
    if name == "area":
        # Shrinking: exact box overlap, the fraction of each source pixel in the output pixel's footprint.
        lo, hi = centres[:, None] - 0.5 * stretch + 0.5, centres[:, None] + 0.5 * stretch + 0.5
        w = (torch.minimum(src[None, :] + 1, hi) - torch.maximum(src[None, :], lo)).clamp(min=0.0)
    else:
        w = torch.where(dist.abs() <= support, kernel(dist), torch.zeros_like(dist))
    return w / w.sum(dim=1, keepdim=True)


def resize(image: Tensor, size: Tuple[int, int], filter: str = "bicubic") -> Tensor:
    """Resize in float with PIL-like filters, antialiased when shrinking.

    Args:
        image: :math:`(B, C, H, W)`.
        size: output (height, width).
        filter: one of :data:`RESAMPLE_FILTERS`.

    Returns:
        :math:`(B, C, H', W')` in the input dtype. Same size in, same tensor values out.
        Overshoot of bicubic/lanczos is not clamped; callers clamp images to their range.
    """
    if filter not in RESAMPLE_FILTERS:
        raise ValueError(f"resize filter {filter!r} is not one of {RESAMPLE_FILTERS}")
    h, w = size
    if tuple(image.shape[-2:]) == (h, w):
        return image.clone()
    compute = torch.float64 if image.dtype == torch.float64 else torch.float32
    wy = _weights(image.shape[-2], h, filter, image.device).to(compute)
    wx = _weights(image.shape[-1], w, filter, image.device).to(compute)
    out = torch.matmul(wy, torch.matmul(image.to(compute), wx.T))
    return out.to(image.dtype)
