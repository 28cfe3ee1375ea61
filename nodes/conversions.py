"""ComfyUI tensor layouts to the core's BCHW, with errors naming the node and input."""
from __future__ import annotations

import torch
from torch import Tensor


def image_to_bchw(image: Tensor, node: str, name: str) -> Tensor:
    """IMAGE ``[B,H,W,C]`` to ``[B,C,H,W]`` float32 (a new tensor; the input is untouched)."""
    if image.ndim != 4 or image.shape[0] == 0:
        raise ValueError(f"{node}: {name} must be an IMAGE batch [B,H,W,C] with B >= 1; got {tuple(image.shape)}")
    return image.movedim(-1, 1).to(torch.float32, copy=True)


def bchw_to_image(image: Tensor) -> Tensor:
    return image.movedim(1, -1)


def mask_to_b1hw(mask: Tensor, node: str, name: str) -> Tensor:
    """MASK ``[B,H,W]`` (or one ``[H,W]`` mask) to ``[B,1,H,W]`` float32."""
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] == 0:
        raise ValueError(f"{node}: {name} must be a MASK [B,H,W] or [H,W] with B >= 1; got {tuple(mask.shape)}")
    return mask[:, None].to(torch.float32, copy=True)
