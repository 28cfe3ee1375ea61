"""Rotary position embeddings of Flux and Qwen-Image: axis split, angles, rotation of queries and keys."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import Tensor

__all__ = ["Rope", "apply_rope", "check_head_split", "default_axes_dim", "rope_frequencies"]


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


def check_head_split(hidden_size: int, num_heads: int, axes_dim: Sequence[int]) -> None:
    """Refuse a width the heads do not divide, or a rotary split :func:`rope_frequencies` cannot rotate.

    The split must be three even numbers summing to the head width.

    Raises:
        ValueError: naming the sizes that do not fit.
    """
    if num_heads <= 0 or hidden_size % num_heads:
        raise ValueError(f"hidden size {hidden_size} is not a multiple of {num_heads} heads")
    head = hidden_size // num_heads
    if len(axes_dim) != 3 or sum(axes_dim) != head or any(a % 2 for a in axes_dim):
        raise ValueError(f"axes_dim {axes_dim} must be three even numbers summing to the head width {head}")


Rope = Tuple[Tensor, Tensor]


def rope_frequencies(ids: Tensor, axes_dim: Sequence[int], theta: float = 10000.0) -> Rope:
    """Cosines and sines of the rotary embedding of token positions.

    Each position axis ``a`` takes ``axes_dim[a]`` channels of an attention head, rotating channel
    pairs by ``pos * theta ** (-2j / axes_dim[a])``. Angles are computed in float64 like the
    references, then kept in float32.

    Args:
        ids: :math:`(N, A)` positions per token and axis (Flux: ``(0, row, column)`` for image
            tokens, zeros for text tokens; Qwen-Image: frame, row, column, text tokens on the diagonal).
        axes_dim: channels per axis, summing to the head width (Flux: ``(16, 56, 56)``).
        theta: base period.

    Returns:
        ``(cos, sin)``, each :math:`(N, D/2)` with :math:`D` = ``sum(axes_dim)``, float32.

    Example:
        >>> cos, sin = rope_frequencies(torch.zeros(5, 3), (4, 4, 8))
        >>> tuple(cos.shape), bool(cos.eq(1).all()), bool(sin.eq(0).all())
        ((5, 8), True, True)
    """
    angles = []
    for axis, dim in enumerate(axes_dim):
        exponent = torch.arange(0, dim, 2, dtype=torch.float64, device=ids.device) / dim
        angles.append(ids[:, axis].to(torch.float64)[:, None] * theta ** -exponent)
    angles = torch.cat(angles, dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: Tensor, rope: Rope) -> Tensor:
    """Rotate consecutive channel pairs of ``x`` by the angles of :func:`rope_frequencies`.

    Args:
        x: :math:`(B, H, N, D)` queries or keys.
        rope: ``(cos, sin)``, each :math:`(N, D/2)`.

    Returns:
        :math:`(B, H, N, D)` in the dtype of ``x`` (rotated in float32).
    """
    cos, sin = rope
    pairs = x.float().unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    out = torch.stack((cos * real - sin * imag, sin * real + cos * imag), dim=-1)
    return out.flatten(-2).to(x.dtype)
