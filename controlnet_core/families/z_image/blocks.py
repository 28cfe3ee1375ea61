r"""Z-Image's single-stream transformer block (NextDiT) and the control block built on it.

Named like diffusers' ``ZImageTransformerBlock`` / ``ZImageControlTransformerBlock`` (the names alibaba-pai's
Fun ControlNet files use), written from the block's equations. One token stream, RMS norms before and after
each sub-layer, and (with modulation) a tanh-gated adaLN from the 256-wide timestep embedding:

.. math::

    s_1, g_1, s_2, g_2 = \mathrm{Linear}(t)

    h \leftarrow h + \tanh(g_1)\, \mathrm{N}_2(\mathrm{Attn}(\mathrm{N}_1(h)(1 + s_1)))

    h \leftarrow h + \tanh(g_2)\, \mathrm{N}_4(\mathrm{FFN}(\mathrm{N}_3(h)(1 + s_2)))

where :math:`\mathrm{Attn}` RMS-normalises queries and keys per head and rotates them by the tokens' 3-axis
positions, and :math:`\mathrm{FFN}` is SwiGLU (``w2(silu(w1 h) * w3 h)``). The control block adds the VACE-style
skip: the first one mixes the base model's tokens in (``c = before_proj(c) + x``), each one returns
``after_proj(c)`` beside ``c``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.norms import WeightRMSNorm
from ...layers.rotary import Rope, apply_rope

__all__ = ["NORM_EPS", "ZImageAttention", "ZImageBlock", "ZImageControlBlock", "ZImageFeedForward"]

NORM_EPS = 1e-5
"""Epsilon of every RMS norm of the block (token norms and the per-head query/key norms)."""


class ZImageAttention(nn.Module):
    """Self-attention with per-head RMS query/key norms and rotary positions, no biases.

    Args:
        dim: token width.
        num_heads: attention heads (``dim`` must be a multiple).
    """

    def __init__(self, dim: int, num_heads: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.num_heads = num_heads
        head = dim // num_heads
        self.to_q = nn.Linear(dim, dim, bias=False, **kw)
        self.to_k = nn.Linear(dim, dim, bias=False, **kw)
        self.to_v = nn.Linear(dim, dim, bias=False, **kw)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, bias=False, **kw)])
        self.norm_q = WeightRMSNorm(head, eps=NORM_EPS, **kw)
        self.norm_k = WeightRMSNorm(head, eps=NORM_EPS, **kw)

    def forward(self, x: Tensor, rope: Rope, attention: AttentionFn = scaled_dot_product) -> Tensor:
        """Attend over all tokens of :math:`(B, N, D)`; ``rope`` holds one rotation per token."""
        def heads(t: Tensor) -> Tensor:
            return t.unflatten(-1, (self.num_heads, -1))

        q = self.norm_q(heads(self.to_q(x))).transpose(1, 2)
        k = self.norm_k(heads(self.to_k(x))).transpose(1, 2)
        v = heads(self.to_v(x)).transpose(1, 2)
        out = attention(apply_rope(q, rope), apply_rope(k, rope), v)
        return self.to_out[0](out.to(x.dtype))


class ZImageFeedForward(nn.Module):
    """SwiGLU MLP without biases: ``w2(silu(w1 x) * w3 x)``."""

    def __init__(self, dim: int, hidden: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.w1 = nn.Linear(dim, hidden, bias=False, **kw)
        self.w2 = nn.Linear(hidden, dim, bias=False, **kw)
        self.w3 = nn.Linear(dim, hidden, bias=False, **kw)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`(..., D)` in and out."""
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class ZImageBlock(nn.Module):
    """One NextDiT single-stream block (see the module docstring).

    Args:
        dim: token width (3840).
        num_heads: attention heads (30).
        ffn_hidden: SwiGLU hidden width (10240).
        adaln_dim: width of the timestep embedding the modulation reads (256); None = no modulation
            (the caption refiner's blocks).
    """

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, adaln_dim: Optional[int] = 256,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.attention = ZImageAttention(dim, num_heads, **kw)
        self.feed_forward = ZImageFeedForward(dim, ffn_hidden, **kw)
        self.attention_norm1 = WeightRMSNorm(dim, eps=NORM_EPS, **kw)
        self.attention_norm2 = WeightRMSNorm(dim, eps=NORM_EPS, **kw)
        self.ffn_norm1 = WeightRMSNorm(dim, eps=NORM_EPS, **kw)
        self.ffn_norm2 = WeightRMSNorm(dim, eps=NORM_EPS, **kw)
        self.adaLN_modulation = None if adaln_dim is None else nn.Sequential(nn.Linear(adaln_dim, 4 * dim, **kw))

    def forward(self, x: Tensor, rope: Rope, adaln: Optional[Tensor] = None,
                attention: AttentionFn = scaled_dot_product) -> Tensor:
        r"""Run the block.

        Args:
            x: tokens :math:`(B, N, D)`.
            rope: rotary ``(cos, sin)``, each :math:`(N, d/2)` for head width :math:`d`.
            adaln: timestep embedding :math:`(B, 256)`; required with modulation.
            attention: the attention kernel.

        Returns:
            :math:`(B, N, D)`.
        """
        if self.adaLN_modulation is None:
            x = x + self.attention_norm2(self.attention(self.attention_norm1(x), rope, attention))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        scale_attn, gate_attn, scale_ffn, gate_ffn = self.adaLN_modulation(adaln.to(x.dtype))[:, None].chunk(4, dim=-1)
        attn = self.attention(self.attention_norm1(x) * (1 + scale_attn), rope, attention)
        x = x + gate_attn.tanh() * self.attention_norm2(attn)
        ffn = self.feed_forward(self.ffn_norm1(x) * (1 + scale_ffn))
        return x + gate_ffn.tanh() * self.ffn_norm2(ffn)


class ZImageControlBlock(ZImageBlock):
    """A modulated :class:`ZImageBlock` on the control stream, returning a skip for the base model.

    Args:
        first: the stream's first block, which owns ``before_proj`` and mixes the base tokens in.
        (others as :class:`ZImageBlock`, always modulated)
    """

    def __init__(self, dim: int, num_heads: int, ffn_hidden: int, adaln_dim: int = 256, *, first: bool,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__(dim, num_heads, ffn_hidden, adaln_dim, dtype=dtype, device=device)
        self.before_proj = nn.Linear(dim, dim, dtype=dtype, device=device) if first else None
        self.after_proj = nn.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, c: Tensor, x: Tensor, rope: Rope, adaln: Tensor,  # type: ignore[override]
                attention: AttentionFn = scaled_dot_product) -> Tuple[Tensor, Tensor]:
        r"""Advance the control stream by one block.

        Args:
            c: control stream :math:`(B, N, D)`.
            x: the base model's tokens at the stage's start :math:`(B, N, D)` (read by the first block only).
            rope: rotary ``(cos, sin)`` of the :math:`N` tokens.
            adaln: timestep embedding :math:`(B, 256)`.
            attention: the attention kernel.

        Returns:
            ``(skip, c)``: the residual for the base model and the advanced stream, each :math:`(B, N, D)`.
        """
        if self.before_proj is not None:
            c = self.before_proj(c) + x
        c = super().forward(c, rope, adaln, attention)
        return self.after_proj(c), c
