"""How Flux lays a latent out as tokens: 2x2 patches, their grid and position ids."""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ...layers.tokens import token_grid as patch_grid

__all__ = ["PATCH", "token_grid", "position_ids"]

PATCH = 2
"""Latent pixels per token side."""


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
