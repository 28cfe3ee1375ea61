"""How the rotary position channels of a head split over the position axes."""
from __future__ import annotations

from typing import Tuple

__all__ = ["default_axes_dim"]


def default_axes_dim(head_dim: int) -> Tuple[int, int, int]:
    """Rotary channels per position axis (first axis, rows, columns), as Flux and Qwen-Image split them.

    ``(16, 56, 56)`` for 128-wide heads.

    The split is not stored in the weights. Other head widths keep those proportions (an eighth for the
    first axis, the rest shared by rows and columns), in even numbers; the loaders take ``axes_dim=`` to
    match a base model built otherwise.

    Example:
        >>> default_axes_dim(128), default_axes_dim(16)
        ((16, 56, 56), (4, 6, 6))
    """
    side = (head_dim - head_dim // 8) // 4 * 2
    return head_dim - 2 * side, side, side
