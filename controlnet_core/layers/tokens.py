"""Image tokens of a patched latent: the grid a transformer's patch embedding lays a latent out on."""
from __future__ import annotations

from typing import Tuple

__all__ = ["token_grid"]


def token_grid(latent_size: Tuple[int, int], patch: int) -> Tuple[int, int]:
    """``(h, w)`` of the image tokens of a latent of ``latent_size`` cut into ``patch`` x ``patch`` patches.

    Partial patches at the edges (odd sizes, padded by the models) count as tokens.

    Example:
        >>> token_grid((9, 6), 2)
        (5, 3)
    """
    return -(-latent_size[0] // patch), -(-latent_size[1] // patch)
