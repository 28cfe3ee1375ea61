"""Timestep embeddings every family's time embedder starts from."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["timestep_embedding"]


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal timestep embedding, cosine half first.

    Args:
        timesteps: shape :math:`(B,)`, model timesteps (may be fractional).
        dim: embedding width.
        max_period: lowest frequency's period.

    Returns:
        Float32 tensor of shape :math:`(B, dim)`.

    Example:
        >>> timestep_embedding(torch.tensor([0.0, 999.0]), 320).shape
        torch.Size([2, 320])
    """
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half
    )
    args = timesteps[:, None].float() * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding
