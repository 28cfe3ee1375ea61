"""Image tokens of a patched latent: the grid a transformer's patch embedding lays a latent out on."""
from __future__ import annotations

from typing import Tuple

import torch.nn.functional as F
from torch import Tensor

__all__ = ["pack_patches", "token_grid"]


def token_grid(latent_size: Tuple[int, int], patch: int) -> Tuple[int, int]:
    """``(h, w)`` of the image tokens of a latent of ``latent_size`` cut into ``patch`` x ``patch`` patches.

    Partial patches at the edges (odd sizes, padded by the models) count as tokens.

    Example:
        >>> token_grid((9, 6), 2)
        (5, 3)
    """
    return -(-latent_size[0] // patch), -(-latent_size[1] // patch)


def pack_patches(x: Tensor, patch: int) -> Tuple[Tensor, Tuple[int, int]]:
    r"""``patch`` x ``patch`` patches of a latent as tokens, channel-major within a patch.

    Flux's and Qwen-Image's packing; partial patches at odd edges are padded circularly, as ComfyUI pads them.

    Args:
        x: :math:`(B, C, H, W)`.
        patch: latent pixels per token side.

    Returns:
        :math:`(B, \lceil H/p \rceil \lceil W/p \rceil, p^2 C)` tokens and the token grid ``(h, w)``.

    Example:
        >>> import torch
        >>> tokens, grid = pack_patches(torch.arange(8.0).reshape(1, 2, 2, 2), 2)
        >>> tokens.tolist(), grid
        ([[[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]], (1, 1))
    """
    h, w = token_grid(tuple(x.shape[-2:]), patch)
    pad_h, pad_w = h * patch - x.shape[-2], w * patch - x.shape[-1]
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    b, c = x.shape[:2]
    tokens = x.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 1, 3, 5).reshape(b, h * w, c * patch * patch)
    return tokens, (h, w)
