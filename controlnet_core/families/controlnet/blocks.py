"""Building blocks of the ControlNet encoder, named like the original ``cldm`` weights.

Attribute names follow the original (ldm) checkpoint keys so those files load without renaming:
``in_layers.2`` is a residual block's first convolution, ``ff.net.0.proj`` the GEGLU projection.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ResBlock",
    "Downsample",
    "SpatialTransformer",
    "EmbedSequential",
]


def _group_norm(channels: int, eps: float, dtype, device) -> nn.GroupNorm:
    return nn.GroupNorm(32, channels, eps=eps, affine=True, dtype=dtype, device=device)


class ResBlock(nn.Module):
    """Residual block conditioned on the time embedding.

    Args:
        channels: input channels.
        emb_channels: time embedding width.
        out_channels: output channels (defaults to ``channels``).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        out_channels = out_channels or channels
        kw = {"dtype": dtype, "device": device}
        self.in_layers = nn.Sequential(
            _group_norm(channels, 1e-5, **kw), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1, **kw)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels, **kw))
        # Index 2 stands where the original has dropout, so the last conv keeps the key out_layers.3.
        self.out_layers = nn.Sequential(
            _group_norm(out_channels, 1e-5, **kw), nn.SiLU(), nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, **kw),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1, **kw)
        )

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        """:math:`(B, C, H, W)` and the time embedding :math:`(B, E)` to :math:`(B, C_{out}, H, W)`."""
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution halving the resolution."""

    def __init__(self, channels: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`(B, C, H, W)` to :math:`(B, C, H/2, W/2)`."""
        return self.op(x)


class CrossAttention(nn.Module):
    def __init__(self, query_dim: int, heads: int, context_dim: Optional[int] = None,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        context_dim = context_dim or query_dim
        self.heads = heads
        self.to_q = nn.Linear(query_dim, query_dim, bias=False, **kw)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False, **kw)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False, **kw)
        self.to_out = nn.Sequential(nn.Linear(query_dim, query_dim, **kw))

    def forward(self, x: Tensor, context: Optional[Tensor] = None) -> Tensor:
        context = x if context is None else context
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        b, n, c = q.shape
        q, k, v = (t.reshape(b, -1, self.heads, c // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, c))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        inner = dim * 4
        self.net = nn.Sequential(
            GEGLU(dim, inner, dtype=dtype, device=device), nn.Identity(),
            nn.Linear(inner, dim, dtype=dtype, device=device),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.attn1 = CrossAttention(dim, heads, **kw)
        self.ff = FeedForward(dim, **kw)
        self.attn2 = CrossAttention(dim, heads, context_dim, **kw)
        self.norm1 = nn.LayerNorm(dim, **kw)
        self.norm2 = nn.LayerNorm(dim, **kw)
        self.norm3 = nn.LayerNorm(dim, **kw)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class SpatialTransformer(nn.Module):
    """Self- and cross-attention over the pixels of a feature map.

    Args:
        channels: feature channels.
        heads: attention heads.
        depth: transformer blocks.
        context_dim: cross-attention context width.
        use_linear: linear in/out projections (SD2.x, SDXL) instead of 1x1 convolutions (SD1.x).
    """

    def __init__(self, channels: int, heads: int, depth: int, context_dim: int, use_linear: bool,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.use_linear = use_linear
        self.norm = _group_norm(channels, 1e-6, **kw)
        if use_linear:
            self.proj_in = nn.Linear(channels, channels, **kw)
            self.proj_out = nn.Linear(channels, channels, **kw)
        else:
            self.proj_in = nn.Conv2d(channels, channels, 1, **kw)
            self.proj_out = nn.Conv2d(channels, channels, 1, **kw)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(channels, heads, context_dim, **kw) for _ in range(depth)
        )

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        """:math:`(B, C, H, W)` attending to the context :math:`(B, T, D)`; same shape out."""
        b, c, h, w = x.shape
        x_in = x
        x = self.norm(x)
        if not self.use_linear:
            x = self.proj_in(x)
        x = x.permute(0, 2, 3, 1).reshape(b, h * w, c)
        if self.use_linear:
            x = self.proj_in(x)
        for block in self.transformer_blocks:
            x = block(x, context)
        if self.use_linear:
            x = self.proj_out(x)
        # Back to contiguous NCHW once: convolutions on permuted views take slow paths on the CPU.
        x = x.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
        if not self.use_linear:
            x = self.proj_out(x)
        return x + x_in


class EmbedSequential(nn.Sequential):
    """A sequence of layers, each given the time embedding or the context it needs."""

    def forward(self, x: Tensor, emb: Tensor, context: Tensor) -> Tensor:  # type: ignore[override]
        """Run the layers in order, giving each what it takes."""
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context)
            else:
                x = layer(x)
        return x
