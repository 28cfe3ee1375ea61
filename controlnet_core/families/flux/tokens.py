"""How Flux lays a latent out as tokens: 2x2 patches, their grid and position ids."""
from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ...layers.tokens import token_grid as patch_grid

__all__ = ["PATCH", "pack_latent", "token_grid", "position_ids"]

PATCH = 2
"""Latent pixels per token side."""


def pack_latent(x: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
    r"""Flux's 2x2 patch packing, padding odd sizes circularly as ComfyUI does.

    Args:
        x: :math:`(B, C, H, W)`.

    Returns:
        :math:`(B, \lceil H/2 \rceil \lceil W/2 \rceil, 4C)` tokens, channel-major within a
        patch, and the token grid ``(h, w)``.

    Example:
        >>> tokens, grid = pack_latent(torch.arange(8.0).reshape(1, 2, 2, 2))
        >>> tokens.tolist(), grid
        ([[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]], (1, 1))
    """
    h, w = token_grid(tuple(x.shape[-2:]))
    pad_h, pad_w = h * PATCH - x.shape[-2], w * PATCH - x.shape[-1]
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    b, c = x.shape[:2]
    tokens = x.reshape(b, c, h, PATCH, w, PATCH).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * PATCH * PATCH)
    return tokens, (h, w)


def token_grid(latent_size: Tuple[int, int]) -> Tuple[int, int]:
    """``(h, w)`` of Flux's packed image tokens of a latent of ``latent_size`` (odd sizes are padded).

    Example:
        >>> token_grid((9, 6))
        (5, 3)
    """
    return patch_grid(latent_size, PATCH)


def position_ids(num_txt: int, grid: Tuple[int, int], device) -> Tensor:
    """:math:`(T + h w, 3)`: zeros for the text tokens, ``(0, row, column)`` for the image tokens."""
    h, w = grid
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    img = torch.stack((torch.zeros_like(rows), rows, cols), dim=-1).reshape(h * w, 3)
    return torch.cat((img.new_zeros(num_txt, 3), img)).float()
