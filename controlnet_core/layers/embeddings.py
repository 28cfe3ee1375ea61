"""Timestep embeddings every family's time embedder starts from."""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["per_row", "timestep_embedding"]


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


def per_row(values, batch: int) -> Tensor:
    """Timesteps (or Flux's guidance) as a float32 vector with one entry per latent row.

    Args:
        values: a scalar, a one-element tensor, or :math:`(B,)`.
        batch: rows of the latent, :math:`B`.

    Example:
        >>> per_row(torch.tensor(5.0), 3).tolist(), per_row(torch.tensor([1.0, 2.0]), 2).tolist()
        ([5.0, 5.0, 5.0], [1.0, 2.0])
    """
    values = torch.as_tensor(values).reshape(-1).float()
    return values.expand(batch) if values.numel() == 1 else values
