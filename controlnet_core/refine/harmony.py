"""Seam harmony: match a generated crop's colour to the original around the pasted area.

A sampled crop often drifts in colour or exposure as a whole. Where the paste weights are 0 the
original is kept, so the drift shows as a seam at the mask's edge. Just outside the pasted area
(the seam ring) the generated crop and the original show the same content, so their per-channel
mean and spread there measure the drift; the whole crop is corrected by it before blending.
Pixels with weight 0 are never written, so they stay bit-identical to the original.
"""
from __future__ import annotations

from functools import partial
from typing import Literal, Tuple, get_args

import torch
from torch import Tensor

from .masks import grow

__all__ = ["HARMONY_MODES", "HarmonyMode", "seam_ring", "match_seam", "harmonizer"]

HarmonyMode = Literal["off", "mean", "mean and spread"]
HARMONY_MODES: Tuple[HarmonyMode, ...] = get_args(HarmonyMode)
MIN_RING_PIXELS = 16  # fewer pixels measure noise, not drift
SPREAD_LIMITS = (0.5, 2.0)  # a spread ratio outside this is content, not exposure drift


def seam_ring(weights: Tensor, width: int) -> Tensor:
    """Pixels with weight 0 within ``width`` pixels of a pixel with weight > 0.

    Args:
        weights: :math:`(1, 1, h, w)` paste weights.
        width: ring width in pixels.

    Returns:
        :math:`(1, 1, h, w)` bool.
    """
    pasted = (weights > 0).to(torch.float32)
    return (grow(pasted, width) > 0) & (weights == 0)


def match_seam(generated: Tensor, original: Tensor, weights: Tensor, width: int = 16,
               mode: HarmonyMode = "mean and spread") -> Tensor:
    """Correct ``generated`` so that, on the seam ring, it has the original's per-channel statistics.

    Args:
        generated: :math:`(1, C, h, w)` the crop resized to its paste box.
        original: :math:`(1, C, h, w)` the original under the box.
        weights: :math:`(1, 1, h, w)` paste weights.
        width: seam ring width in pixels.
        mode: ``mean`` (shift) or ``mean and spread`` (shift and scale, the scale kept within
            :data:`SPREAD_LIMITS`); ``off`` returns ``generated``.

    Returns:
        The corrected crop, clamped to 0..1; ``generated`` itself when the ring has fewer than
        :data:`MIN_RING_PIXELS` pixels (a mask filling its box has no ring to measure).
    """
    if mode not in HARMONY_MODES:
        raise ValueError(f"harmony mode {mode!r} is not one of {HARMONY_MODES}")
    ring = seam_ring(weights, width)[0, 0]
    if mode == "off" or int(ring.sum()) < MIN_RING_PIXELS:
        return generated
    gen, orig = generated[0][:, ring], original[0][:, ring]  # (C, n)
    mean_g, mean_o = gen.mean(dim=1), orig.mean(dim=1)
    scale = torch.ones_like(mean_g)
    if mode == "mean and spread":
        std_g, std_o = gen.std(dim=1), orig.std(dim=1)
        scale = torch.where(std_g > 1e-6, std_o / std_g.clamp(min=1e-6), scale).clamp(*SPREAD_LIMITS)
    out = (generated - mean_g[None, :, None, None]) * scale[None, :, None, None] + mean_o[None, :, None, None]
    return out.clamp(0.0, 1.0)


def harmonizer(mode: HarmonyMode, width: int = 16):
    """A ``harmonize`` callable for :func:`crop.paste`, or None for ``off``."""
    return None if mode == "off" else partial(match_seam, width=width, mode=mode)
