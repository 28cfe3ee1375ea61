r"""Qwen-Image's dual-stream transformer block, its rotary positions and its timestep embedder.

Named like diffusers' ``QwenImageTransformerBlock`` (the names the InstantX weight files and ComfyUI's
Qwen-Image model use), written from the block's equations. Image and text tokens keep their own
modulation, projections and MLPs and meet in one joint attention over ``[text, image]``:

.. math::

    s_1, c_1, g_1, s_2, c_2, g_2 = \mathrm{Linear}(\mathrm{SiLU}(t))

    h \leftarrow h + g_1 \cdot \mathrm{Attn}(\mathrm{LN}(h)(1 + c_1) + s_1)

    h \leftarrow h + g_2 \cdot \mathrm{MLP}(\mathrm{LN}(h)(1 + c_2) + s_2)

per stream, where :math:`\mathrm{Attn}` projects each stream to queries, keys and values, RMS-normalises
queries and keys per head, rotates them by their 3-axis positions and attends jointly.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.norms import WeightRMSNorm
from ...layers.rotary import Rope, apply_rope

__all__ = ["QwenTimestepEmbedder", "QwenJointAttention",
           "QwenFeedForward", "QwenImageBlock"]

EPS = 1e-6
"""Epsilon of the blocks' LayerNorms (and, through :class:`WeightRMSNorm`, of the QK norms)."""


class _TimestepMLP(nn.Module):
    """``linear_1``, SiLU, ``linear_2`` (diffusers' ``TimestepEmbedding`` names)."""

    def __init__(self, in_dim: int, dim: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim, dtype=dtype, device=device)
        self.linear_2 = nn.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        """:math:`(B, C)` in, :math:`(B, D)` out."""
        return self.linear_2(F.silu(self.linear_1(x)))


class QwenTimestepEmbedder(nn.Module):
    """The conditioning vector of a flow time in 0..1: a 256-wide sinusoid of ``1000 t`` through an MLP.

    Args:
        dim: hidden width.
        channels: sinusoid width (256 in Qwen-Image).
    """

    def __init__(self, dim: int, channels: int = 256, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.channels = channels
        self.timestep_embedder = _TimestepMLP(channels, dim, dtype=dtype, device=device)

    def sinusoid(self, t: Tensor) -> Tensor:
        """:math:`(B,)` times in 0..1 to :math:`(B, C)` float32, cosines first.

        The 1000x scale multiplies the angles (not the times), in the order the references compute them.
        """
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        angles = t.float()[:, None] * freqs[None] * 1000
        return torch.cat((angles.cos(), angles.sin()), dim=-1)

    def forward(self, t: Tensor) -> Tensor:
        """:math:`(B,)` times in 0..1 to the :math:`(B, D)` conditioning vector in the weights' dtype."""
        weight = self.timestep_embedder.linear_1.weight
        return self.timestep_embedder(self.sinusoid(t).to(weight.dtype))


class QwenJointAttention(nn.Module):
    """Per-stream projections (``to_*`` image, ``add_*`` text), per-head RMS QK norms, one joint attention.

    Args:
        dim: hidden width.
        num_heads: attention heads; the head width is ``dim // num_heads``.
    """

    def __init__(self, dim: int, num_heads: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        head = dim // num_heads
        self.num_heads = num_heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, **kw) for _ in range(3))
        self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, dim, **kw) for _ in range(3))
        self.norm_q, self.norm_k = WeightRMSNorm(head, **kw), WeightRMSNorm(head, **kw)
        self.norm_added_q, self.norm_added_k = WeightRMSNorm(head, **kw), WeightRMSNorm(head, **kw)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, **kw)])
        self.to_add_out = nn.Linear(dim, dim, **kw)

    def _heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def forward(self, img: Tensor, txt: Tensor, rope: Rope, attention: AttentionFn = scaled_dot_product,
                *, image_only: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """Joint attention of the modulated streams.

        Args:
            img: :math:`(B, N_i, D)` image tokens.
            txt: :math:`(B, N_t, D)` text tokens.
            rope: rotary angles of the text tokens, then the image tokens (:math:`N_t + N_i` rows).
            attention: the attention kernel.
            image_only: skip the text output projection (nothing reads it after the last block).

        Returns:
            ``(image out, text out)``, :math:`(B, N_i, D)` and :math:`(B, N_t, D)`; text out is None
            when ``image_only``.
        """
        heads = self._heads
        q = torch.cat((self.norm_added_q(heads(self.add_q_proj(txt))), self.norm_q(heads(self.to_q(img)))), 2)
        k = torch.cat((self.norm_added_k(heads(self.add_k_proj(txt))), self.norm_k(heads(self.to_k(img)))), 2)
        v = torch.cat((heads(self.add_v_proj(txt)), heads(self.to_v(img))), 2)
        out = attention(apply_rope(q, rope), apply_rope(k, rope), v)
        n_txt = txt.shape[1]
        img_out = self.to_out[0](out[:, n_txt:])
        return img_out, (None if image_only else self.to_add_out(out[:, :n_txt]))


class _GeluProjection(nn.Module):
    """Linear then tanh-approximated GELU (diffusers' ``GELU`` layer, hence the ``proj`` name)."""

    def __init__(self, dim: int, hidden: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class QwenFeedForward(nn.Module):
    """``net.0`` (linear + GELU), ``net.1`` (inference no-op, where the reference has dropout), ``net.2``."""

    def __init__(self, dim: int, hidden: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GeluProjection(dim, hidden, dtype=dtype, device=device), nn.Identity(),
                                  nn.Linear(hidden, dim, dtype=dtype, device=device)])

    def forward(self, x: Tensor) -> Tensor:
        """:math:`(B, N, D)` in and out."""
        return self.net[2](self.net[0](x))


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """Affine-free LayerNorm, then the conditioning's scale and shift."""
    return F.layer_norm(x, x.shape[-1:], eps=EPS) * (1 + scale) + shift


class QwenImageBlock(nn.Module):
    """One dual-stream Qwen-Image block.

    Args:
        dim: hidden width (3072 in Qwen-Image).
        num_heads: attention heads (24).
        mlp_hidden: hidden width of each stream's MLP (4x ``dim``).
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        # Index 0 is the SiLU, so the weights' keys read img_mod.1 / txt_mod.1.
        self.img_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, **kw))
        self.txt_mod = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, **kw))
        self.attn = QwenJointAttention(dim, num_heads, **kw)
        self.img_mlp = QwenFeedForward(dim, mlp_hidden, **kw)
        self.txt_mlp = QwenFeedForward(dim, mlp_hidden, **kw)

    def forward(self, img: Tensor, txt: Tensor, temb: Tensor, rope: Rope,
                attention: AttentionFn = scaled_dot_product, *,
                image_only: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """One block.

        Args:
            img: :math:`(B, N_i, D)` image tokens.
            txt: :math:`(B, N_t, D)` text tokens.
            temb: :math:`(B, D)` conditioning vector.
            rope: rotary angles of the text tokens, then the image tokens.
            attention: the attention kernel.
            image_only: leave the text stream un-updated (after the last block nothing reads it).

        Returns:
            The updated ``(img, txt)``; ``txt`` is None when ``image_only``.
        """
        i_shift1, i_scale1, i_gate1, i_shift2, i_scale2, i_gate2 = self.img_mod(temb)[:, None].chunk(6, dim=-1)
        t_shift1, t_scale1, t_gate1, t_shift2, t_scale2, t_gate2 = self.txt_mod(temb)[:, None].chunk(6, dim=-1)
        img_attn, txt_attn = self.attn(_modulate(img, i_shift1, i_scale1), _modulate(txt, t_shift1, t_scale1),
                                       rope, attention, image_only=image_only)
        img = img + i_gate1 * img_attn
        img = img + i_gate2 * self.img_mlp(_modulate(img, i_shift2, i_scale2))
        if image_only:
            return img, None
        txt = txt + t_gate1 * txt_attn
        txt = txt + t_gate2 * self.txt_mlp(_modulate(txt, t_shift2, t_scale2))
        return img, txt
