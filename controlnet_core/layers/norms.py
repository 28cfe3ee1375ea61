"""The two RMS norms of the transformer families' query/key normalisation, named by what they hold.

Both normalise the last axis with epsilon 1e-6 (Z-Image's blocks give 1e-5); they differ where the reference
models differ, and the parameter name is part of the weight files' keys.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ScaleRMSNorm", "WeightRMSNorm"]

EPS = 1e-6


class ScaleRMSNorm(nn.Module):
    """RMS norm with a learnt ``scale`` (Flux's keys), computed in the input's dtype as Flux's reference does."""

    def __init__(self, dim: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise :math:`(..., C)` over :math:`C`."""
        if hasattr(F, "rms_norm"):
            return F.rms_norm(x, self.scale.shape, self.scale, eps=EPS)
        # torch before 2.4, which ComfyUI still supports, has no fused RMS norm.
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * self.scale


class WeightRMSNorm(nn.Module):
    """RMS norm with a learnt ``weight`` (diffusers' ``qk_norm="rms_norm"`` keys), statistics in float32."""

    def __init__(self, dim: int, dtype: Optional[torch.dtype] = None, device=None, eps: float = EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim, dtype=dtype, device=device))

    def forward(self, x: Tensor) -> Tensor:
        """Normalise the last dimension: :math:`(..., d)` in and out."""
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return (x * torch.rsqrt(variance + self.eps)).to(self.weight.dtype) * self.weight
