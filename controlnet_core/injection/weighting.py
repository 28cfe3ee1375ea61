"""How residuals are weighted before they reach the UNet: strength, control modes, masks, sums.

Semantics follow the reference tools (see the README's semantics table):

* ``balanced``: every residual times ``strength`` on cond and uncond rows (ComfyUI, diffusers).
* ``prompt``: A1111 "My prompt is more important": residual ``i`` of ``n`` times
  ``soft_base ** (n - i)`` (mid block last, weight 1), on cond and uncond rows.
* ``controlnet``: A1111 "ControlNet is more important" = diffusers ``guess_mode``: the soft curve,
  and no residual on the uncond rows. With ``soft_base = 10 ** (-1 / n)`` the curve is exactly
  diffusers' ``logspace(-1, 0, n + 1)``.
"""
from __future__ import annotations

from typing import Literal, Optional, Sequence, Tuple, get_args

import torch
from torch import Tensor

from ..residuals import ControlResiduals, check_same_layout
from .hint import resample

__all__ = [
    "CONTROL_MODES",
    "ControlMode",
    "A1111_SOFT_BASE",
    "DIFFUSERS_SOFT_BASE",
    "soft_weights",
    "guess_mode_weights",
    "block_scales",
    "uniform_scales",
    "uncond_multiplier_for",
    "weight_residuals",
    "mask_tokens",
    "sum_residuals",
]

ControlMode = Literal["balanced", "prompt", "controlnet"]
CONTROL_MODES: Tuple[ControlMode, ...] = get_args(ControlMode)
A1111_SOFT_BASE = 0.825
DIFFUSERS_SOFT_BASE = 10 ** (-1 / 12)


def soft_weights(num_down: int, base: float = A1111_SOFT_BASE) -> Tuple[float, ...]:
    """Soft-injection curve ``base ** (n - i)`` for i = 0..n (n down residuals, then mid at 1.0).

    Example:
        >>> [round(w, 4) for w in soft_weights(12)][:2], soft_weights(12)[-1]
        ([0.0994, 0.1205], 1.0)
    """
    return tuple(float(base ** (num_down - i)) for i in range(num_down + 1))


def guess_mode_weights(num_down: int) -> Tuple[float, ...]:
    """diffusers' guess-mode curve ``logspace(-1, 0, n + 1)``, bit-for-bit as diffusers computes it."""
    return tuple(torch.logspace(-1, 0, num_down + 1).tolist())


def block_scales(
    num_down: int,
    strength: float = 1.0,
    mode: ControlMode = "balanced",
    soft_base: float = A1111_SOFT_BASE,
    block_weights: Optional[Sequence[float]] = None,
) -> Tuple[float, ...]:
    """Multiplier per residual (down residuals shallow to deep, then mid).

    Args:
        num_down: number of down residuals (12 SD1.x/2.x, 9 SDXL).
        strength: global conditioning scale.
        mode: one of :data:`CONTROL_MODES`.
        soft_base: base of the soft curve for ``prompt`` and ``controlnet`` modes.
        block_weights: optional extra multiplier per residual, ``num_down + 1`` values.

    Returns:
        ``num_down + 1`` floats.
    """
    if mode not in CONTROL_MODES:
        raise ValueError(f"control mode {mode!r} is not one of {CONTROL_MODES}")
    curve = (1.0,) * (num_down + 1) if mode == "balanced" else soft_weights(num_down, soft_base)
    if block_weights is None:
        block_weights = (1.0,) * (num_down + 1)
    if len(block_weights) != num_down + 1:
        raise ValueError(
            f"block weights need {num_down + 1} values ({num_down} down + 1 mid), got {len(block_weights)}")
    return tuple(strength * c * w for c, w in zip(curve, block_weights))


def uniform_scales(count: int, strength: float = 1.0, mode: ControlMode = "balanced",
                   block_weights: Optional[Sequence[float]] = None) -> Tuple[float, ...]:
    """Multiplier per residual of a transformer ControlNet: strength times the block weight.

    A1111's soft curves weigh UNet levels, shallow to deep; transformer blocks have no such order of
    scales, so only ``balanced`` exists there.

    Example:
        >>> uniform_scales(3, 0.5, block_weights=(1.0, 2.0, 0.0))
        (0.5, 1.0, 0.0)
    """
    if mode != "balanced":
        raise ValueError("the soft curves are for UNet ControlNets; use 'balanced' with transformer ControlNets "
                         "(uncond_multiplier 0 keeps the control off the negative pass)")
    weights = (1.0,) * count if block_weights is None else tuple(block_weights)
    if len(weights) != count:
        raise ValueError(f"block weights need {count} values, got {len(weights)}")
    return tuple(strength * w for w in weights)


def uncond_multiplier_for(mode: str, uncond_multiplier: float = 1.0) -> float:
    """Multiplier for uncond rows: 0 in ``controlnet`` mode, else ``uncond_multiplier``."""
    return 0.0 if mode == "controlnet" else float(uncond_multiplier)


def weight_residuals(residuals: ControlResiduals, scales: Optional[Sequence[float]] = None,
                     row_scale: Optional[Tensor] = None, mask: Optional[Tensor] = None,
                     inplace: bool = False, token_grid: Optional[Tuple[int, int]] = None) -> ControlResiduals:
    r"""Apply per-residual scales, per-row scales and a spatial mask in one pass.

    Args:
        residuals: batch of B.
        scales: one multiplier per residual, in :attr:`ControlResiduals.tensors` order, or None.
        row_scale: :math:`(B,)` multiplier per batch row (e.g. the uncond multiplier), or None.
        mask: :math:`(B \text{ or } 1, 1, H, W)` in 0..1 at any resolution, or None. It is
            averaged down (or bilinearly enlarged) to each residual's resolution, so a residual
            cell is weighted by the fraction of its pixels the mask covers; ones change nothing.
        inplace: overwrite the given tensors (for fresh residuals nobody else holds).
        token_grid: ``(h, w)`` of the patch grid when residuals are image tokens :math:`(B, h w, D)`
            (transformer families): the mask is resampled to that grid and flattened row-major
            (:func:`mask_tokens`). None: residuals are :math:`(B, C, H, W)` maps.
    """
    tensors = residuals.tensors
    if scales is not None and len(scales) != len(tensors):
        raise ValueError(f"{len(scales)} scales for {len(tensors)} residuals")
    if mask is not None and (mask.ndim != 4 or mask.shape[1] != 1):
        raise ValueError(f"mask must be (B, 1, H, W); got {tuple(mask.shape)}")
    out = []
    for k, t in enumerate(tensors):
        factor = None
        if row_scale is not None:
            factor = row_scale.to(device=t.device, dtype=t.dtype).view(-1, *([1] * (t.ndim - 1)))
        if mask is not None:
            m = mask.to(device=t.device, dtype=torch.float32)
            if token_grid is None:
                m = resample(m, tuple(t.shape[-2:]), enlarge="bilinear")
            else:
                m = mask_tokens(m, token_grid)
            m = m.to(t.dtype)
            factor = m if factor is None else factor * m
        if scales is not None:
            factor = scales[k] if factor is None else factor * scales[k]
        if factor is None:
            out.append(t)
        else:
            out.append(t.mul_(factor) if inplace else t * factor)
    return residuals.with_tensors(out)


def mask_tokens(mask: Tensor, grid: Tuple[int, int]) -> Tensor:
    r"""A spatial mask as one weight per image token of a transformer's patch grid.

    Resampled to the grid as masks are for UNet residuals (area average when shrinking), then
    flattened row-major, the token order of Flux's and SD3's patch embeddings.

    Args:
        mask: :math:`(B \text{ or } 1, 1, H, W)` in 0..1, any size.
        grid: ``(h, w)`` tokens.

    Returns:
        :math:`(B \text{ or } 1, h w, 1)`, to multiply residuals of shape :math:`(B, h w, D)`.

    Example:
        >>> left = torch.zeros(1, 1, 8, 8)
        >>> left[..., :4] = 1
        >>> mask_tokens(left, (2, 2)).flatten().tolist()
        [1.0, 0.0, 1.0, 0.0]
    """
    return resample(mask, tuple(grid), enlarge="bilinear").flatten(2).transpose(1, 2)


def sum_residuals(items: Sequence[ControlResiduals]) -> ControlResiduals:
    """Add several ControlNets' (already scaled) residuals, as multi-ControlNet does."""
    if not items:
        raise ValueError("nothing to sum")
    check_same_layout(items)
    return items[0].with_tensors(
        torch.stack(ts).sum(0) if len(ts) > 1 else ts[0] for ts in zip(*(r.tensors for r in items))
    )
