"""Flux transformer blocks, named like Black Forest Labs' weights (the names ComfyUI's Flux uses).

A double-stream block keeps image and text tokens apart but lets them attend jointly; a
single-stream block runs one fused attention + MLP over the concatenated sequence. Both are
modulated by the conditioning vector ``vec`` (timestep, guidance and pooled text) and rotate
queries and keys with a 3-axis rotary embedding of the token positions.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.norms import ScaleRMSNorm
from ...layers.rotary import Rope, apply_rope

__all__ = [
    "MLPEmbedder",
    "Modulation",
    "QKNorm",
    "SelfAttention",
    "DoubleStreamBlock",
    "SingleStreamBlock",
]

def _attention(q: Tensor, k: Tensor, v: Tensor, rope: Rope, attention: AttentionFn) -> Tensor:
    """``attention`` with rotary positions: :math:`(B, H, N, D)` in, :math:`(B, N, H D)` out."""
    return attention(apply_rope(q, rope), apply_rope(k, rope), v)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Parameter-free LayerNorm, then the adaptive affine transform of the conditioning."""
    return torch.addcmul(shift, F.layer_norm(x, x.shape[-1:], eps=1e-6), 1 + scale)


class MLPEmbedder(nn.Module):
    """Two linear layers with a SiLU between (timestep, guidance and pooled-text embedders)."""

    def __init__(self, in_dim: int, hidden_dim: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden_dim, dtype=dtype, device=device)
        self.out_layer = nn.Linear(hidden_dim, hidden_dim, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`(B, C_{in})` in, :math:`(B, D)` out."""
        return self.out_layer(F.silu(self.in_layer(x)))


class Modulation(nn.Module):
    """Shift, scale and gate vectors from the conditioning vector (3 per stream sub-layer).

    Args:
        dim: hidden width.
        count: number of (shift, scale, gate) triples (2 in a double block, 1 in a single block).
    """

    def __init__(self, dim: int, count: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.count = count
        self.lin = nn.Linear(dim, 3 * count * dim, dtype=dtype, device=device)

    def forward(self, vec: Tensor) -> Tuple[Tensor, ...]:
        """:math:`(B, D)` in; ``3 * count`` tensors of shape :math:`(B, 1, D)` out."""
        return self.lin(F.silu(vec))[:, None].chunk(3 * self.count, dim=-1)


class QKNorm(nn.Module):
    """Per-head RMS normalisation of queries and keys."""

    def __init__(self, head_dim: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.query_norm = ScaleRMSNorm(head_dim, dtype=dtype, device=device)
        self.key_norm = ScaleRMSNorm(head_dim, dtype=dtype, device=device)


class SelfAttention(nn.Module):
    """Fused query/key/value projection, QK normalisation and output projection of one stream."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, **kw)
        self.norm = QKNorm(dim // num_heads, **kw)
        self.proj = nn.Linear(dim, dim, **kw)

    def qkv_heads(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """:math:`(B, N, D)` in; normalised queries, keys and values as :math:`(B, H, N, D/H)` out."""
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        return self.norm.query_norm(q), self.norm.key_norm(k), v


def _mlp(dim: int, hidden: int, kw) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, hidden, **kw), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim, **kw))


class DoubleStreamBlock(nn.Module):
    """Image and text streams with their own weights and one joint attention.

    Args:
        dim: hidden width.
        num_heads: attention heads.
        mlp_hidden: hidden width of each stream's MLP (4x ``dim`` in Flux).
        qkv_bias: the fused QKV projections have biases (True in Flux).
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, qkv_bias: bool,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.img_mod = Modulation(dim, 2, **kw)
        self.img_attn = SelfAttention(dim, num_heads, qkv_bias, **kw)
        self.img_mlp = _mlp(dim, mlp_hidden, kw)
        self.txt_mod = Modulation(dim, 2, **kw)
        self.txt_attn = SelfAttention(dim, num_heads, qkv_bias, **kw)
        self.txt_mlp = _mlp(dim, mlp_hidden, kw)

    def forward(self, img: Tensor, txt: Tensor, vec: Tensor, rope: Rope,
                attention: AttentionFn = scaled_dot_product, *,
                image_only: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """One block.

        Args:
            img: :math:`(B, N_i, D)` image tokens.
            txt: :math:`(B, N_t, D)` text tokens.
            vec: :math:`(B, D)` conditioning vector.
            rope: rotary frequencies of the text tokens followed by the image tokens.
            attention: the attention kernel.
            image_only: skip the text stream's update after attention (nothing reads it after the
                last block).

        Returns:
            The updated ``(img, txt)``; ``txt`` is None when ``image_only``.
        """
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(vec)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(vec)
        iq, ik, iv = self.img_attn.qkv_heads(_modulate(img, i_shift1, i_scale1))
        tq, tk, tv = self.txt_attn.qkv_heads(_modulate(txt, t_shift1, t_scale1))
        attn = _attention(torch.cat((tq, iq), 2), torch.cat((tk, ik), 2), torch.cat((tv, iv), 2), rope, attention)
        txt_attn, img_attn = attn[:, :txt.shape[1]], attn[:, txt.shape[1]:]

        img = img + i_gate1 * self.img_attn.proj(img_attn)
        img = img + i_gate2 * self.img_mlp(_modulate(img, i_shift2, i_scale2))
        if image_only:
            return img, None
        txt = txt + t_gate1 * self.txt_attn.proj(txt_attn)
        txt = txt + t_gate2 * self.txt_mlp(_modulate(txt, t_shift2, t_scale2))
        return img, txt


class SingleStreamBlock(nn.Module):
    """Attention and MLP in parallel over the joint text + image sequence.

    ``linear1`` projects to queries, keys, values and the MLP input at once; ``linear2`` maps the
    attention output and the activated MLP input back to the hidden width.

    Args:
        dim: hidden width.
        num_heads: attention heads.
        mlp_hidden: hidden width of the MLP branch.
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.num_heads = num_heads
        self.mlp_hidden = mlp_hidden
        self.linear1 = nn.Linear(dim, 3 * dim + mlp_hidden, **kw)
        self.linear2 = nn.Linear(dim + mlp_hidden, dim, **kw)
        self.norm = QKNorm(dim // num_heads, **kw)
        self.modulation = Modulation(dim, 1, **kw)

    def forward(self, x: Tensor, vec: Tensor, rope: Rope, attention: AttentionFn = scaled_dot_product, *,
                keep_from: int = 0) -> Tensor:
        """One block over the joint text + image tokens.

        Args:
            x: :math:`(B, N, D)` joint tokens.
            vec: :math:`(B, D)` conditioning vector.
            rope: rotary frequencies of all :math:`N` tokens.
            attention: the attention kernel.
            keep_from: first token to return. Every token is attended to, but the MLP and output
                projection run only for the tokens kept (after the last block, the image tokens).

        Returns:
            The updated tokens from ``keep_from`` on, :math:`(B, N - keep_from, D)`.
        """
        shift, scale, gate = self.modulation(vec)
        h = _modulate(x, shift, scale)
        dim = x.shape[-1]
        if keep_from:
            weight, bias = self.linear1.weight, self.linear1.bias
            qkv = F.linear(h, weight[:3 * dim], None if bias is None else bias[:3 * dim])
            mlp = F.linear(h[:, keep_from:], weight[3 * dim:], None if bias is None else bias[3 * dim:])
        else:
            qkv, mlp = self.linear1(h).split([3 * dim, self.mlp_hidden], dim=-1)
        q, k, v = qkv.unflatten(-1, (3, self.num_heads, -1)).permute(2, 0, 3, 1, 4)
        attn = _attention(self.norm.query_norm(q), self.norm.key_norm(k), v, rope, attention)[:, keep_from:]
        return x[:, keep_from:] + gate * self.linear2(torch.cat((attn, F.gelu(mlp, approximate="tanh")), dim=-1))
