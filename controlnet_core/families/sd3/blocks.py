"""Building blocks of the SD3 / SD3.5 MMDiT ControlNets, named like the weight files they load.

Two naming schemes meet here: the InstantX SD3 ControlNets ship diffusers names (``attn.to_q``,
``norm1.linear``, ``ff.net.0.proj``), so :class:`JointBlock` uses them; Stability's SD3.5 Large
ControlNets ship the reference ``mmditx`` names (``attn.qkv``, ``adaLN_modulation.1``,
``mlp.fc1``), so :class:`SelfAttentionBlock` uses those. Both compute what the MMDiT computes:
adaLN-zero modulation, multi-head attention, a tanh-GELU MLP.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.norms import WeightRMSNorm
from ...layers.embeddings import timestep_embedding

__all__ = [
    "PatchEmbed",
    "TimeTextEmbed",
    "JointAttention",
    "JointBlock",
    "SelfAttentionBlock",
    "sincos_2d_comfyui",
]

LN_EPS = 1e-6
TIME_FREQUENCIES = 256


def _layer_norm(x: Tensor) -> Tensor:
    return F.layer_norm(x, x.shape[-1:], eps=LN_EPS)


def _modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


def _heads(x: Tensor, heads: int) -> Tensor:
    """(B, N, H*d) -> (B, H, N, d)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


class PatchEmbed(nn.Module):
    """Latent to tokens: a stride-``patch`` convolution, plus an optional cropped position table.

    Args:
        in_channels: latent channels.
        dim: token width.
        patch_size: pixels per patch side.
        pos_embed_max_size: side of the stored square sin-cos table (96 SD3 Medium, 192 SD3.5
            Large), centre-cropped to the latent's patch grid; None adds no position.
    """

    def __init__(self, in_channels: int, dim: int, patch_size: int, pos_embed_max_size: Optional[int] = None,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pos_embed_max_size = pos_embed_max_size
        self.proj = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size, dtype=dtype, device=device)
        if pos_embed_max_size is not None:
            table = torch.zeros(1, pos_embed_max_size ** 2, dim, dtype=dtype, device=device)
            self.register_buffer("pos_embed", table)

    def cropped_pos_embed(self, h: int, w: int) -> Tensor:
        """The centre h x w of the table, :math:`(1, h w, D)` (h, w in patches)."""
        m = self.pos_embed_max_size
        if h > m or w > m:
            raise ValueError(f"a {h}x{w} patch grid exceeds the {m}x{m} position table; use a smaller image")
        top, left = (m - h) // 2, (m - w) // 2
        table = self.pos_embed.reshape(1, m, m, -1)[:, top:top + h, left:left + w]
        return table.reshape(1, h * w, -1)

    def forward(self, x: Tensor) -> Tensor:
        """Tokens of a latent: :math:`(B, C, H, W)` in, :math:`(B, HW/p^2, D)` out."""
        tokens = self.proj(x).flatten(2).transpose(1, 2)
        if self.pos_embed_max_size is None:
            return tokens
        h, w = x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size
        return tokens + self.cropped_pos_embed(h, w).to(tokens.dtype)


class _MLPEmbed(nn.Module):
    def __init__(self, in_dim: int, dim: int, dtype, device) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim, dtype=dtype, device=device)
        self.linear_2 = nn.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class TimeTextEmbed(nn.Module):
    """The conditioning vector: timestep embedding plus pooled-text embedding, :math:`(B, D)`.

    Args:
        dim: token width.
        pooled_dim: width of the pooled text vector (2048 for SD3's CLIP-L + CLIP-G).
    """

    def __init__(self, dim: int, pooled_dim: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.timestep_embedder = _MLPEmbed(TIME_FREQUENCIES, dim, dtype, device)
        self.text_embedder = _MLPEmbed(pooled_dim, dim, dtype, device)

    def forward(self, timesteps: Tensor, pooled: Tensor) -> Tensor:
        """timesteps :math:`(B,)` in 0..1000 (sigma times 1000), pooled :math:`(B, P)`."""
        t = timestep_embedding(timesteps, TIME_FREQUENCIES).to(pooled.dtype)
        return self.timestep_embedder(t) + self.text_embedder(pooled)


class JointAttention(nn.Module):
    """Attention over image tokens, optionally joined with context tokens (diffusers names).

    Args:
        dim: token width.
        heads: attention heads.
        joint: also project context tokens (``add_*_proj``, ``to_add_out``).
        qk_norm: RMS-normalise queries and keys per head (SD3.5).
    """

    def __init__(self, dim: int, heads: int, joint: bool, qk_norm: bool,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.heads = heads
        head_dim = dim // heads
        self.to_q, self.to_k, self.to_v = (nn.Linear(dim, dim, **kw) for _ in range(3))
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, **kw)])
        if qk_norm:
            self.norm_q, self.norm_k = WeightRMSNorm(head_dim, **kw), WeightRMSNorm(head_dim, **kw)
        if joint:
            self.add_q_proj, self.add_k_proj, self.add_v_proj = (nn.Linear(dim, dim, **kw) for _ in range(3))
            self.to_add_out = nn.Linear(dim, dim, **kw)
            if qk_norm:
                self.norm_added_q, self.norm_added_k = WeightRMSNorm(head_dim, **kw), WeightRMSNorm(head_dim, **kw)

    def _qkv(self, x: Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear, prefix: str) -> Tuple[Tensor, ...]:
        q, k, v = (_heads(proj(x), self.heads) for proj in (q, k, v))
        if hasattr(self, f"norm{prefix}_q"):
            q, k = getattr(self, f"norm{prefix}_q")(q), getattr(self, f"norm{prefix}_k")(k)
        return q, k, v

    def forward(self, x: Tensor, context: Optional[Tensor] = None,
                attention: AttentionFn = scaled_dot_product) -> Tuple[Tensor, Optional[Tensor]]:
        """Image tokens x :math:`(B, N, D)` and context :math:`(B, T, D)` or None; both updated streams out.

        The attention runs through ``attention``.
        """
        q, k, v = self._qkv(x, self.to_q, self.to_k, self.to_v, "")
        if context is None:
            return self.to_out[0](attention(q, k, v)), None
        cq, ck, cv = self._qkv(context, self.add_q_proj, self.add_k_proj, self.add_v_proj, "_added")
        out = attention(torch.cat([q, cq], 2), torch.cat([k, ck], 2), torch.cat([v, cv], 2))
        n = x.shape[1]
        return self.to_out[0](out[:, :n]), self.to_add_out(out[:, n:])


class _AdaNorm(nn.Module):
    def __init__(self, dim: int, chunks: int, dtype, device) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, chunks * dim, dtype=dtype, device=device)

    def forward(self, c: Tensor) -> Tuple[Tensor, ...]:
        return self.linear(F.silu(c)).chunk(self.linear.out_features // self.linear.in_features, dim=1)


class _FeedForward(nn.Module):
    """Linear, tanh-GELU, linear; diffusers names ``net.0.proj`` and ``net.2``."""

    def __init__(self, dim: int, dtype, device) -> None:
        super().__init__()
        proj = nn.Module()
        proj.proj = nn.Linear(dim, 4 * dim, dtype=dtype, device=device)
        self.net = nn.ModuleList([proj, nn.Identity(), nn.Linear(4 * dim, dim, dtype=dtype, device=device)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](F.gelu(self.net[0].proj(x), approximate="tanh"))


class JointBlock(nn.Module):
    """An MMDiT joint block updating image and context tokens (both streams kept).

    Args:
        dim: token width.
        heads: attention heads.
        qk_norm: RMS-normalised queries and keys (SD3.5).
        dual_attention: a second, image-only attention in the block (SD3.5 Medium's MMDiT-X).
    """

    def __init__(self, dim: int, heads: int, qk_norm: bool = False, dual_attention: bool = False,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.norm1 = _AdaNorm(dim, 9 if dual_attention else 6, **kw)
        self.norm1_context = _AdaNorm(dim, 6, **kw)
        self.attn = JointAttention(dim, heads, joint=True, qk_norm=qk_norm, **kw)
        if dual_attention:
            self.attn2 = JointAttention(dim, heads, joint=False, qk_norm=qk_norm, **kw)
        self.ff = _FeedForward(dim, **kw)
        self.ff_context = _FeedForward(dim, **kw)

    def forward(self, x: Tensor, context: Tensor, c: Tensor,
                attention: AttentionFn = scaled_dot_product) -> Tuple[Tensor, Tensor]:
        """x :math:`(B, N, D)`, context :math:`(B, T, D)`, c :math:`(B, D)` -> (x, context).

        Every attention runs through ``attention``.
        """
        mod = self.norm1(c)
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = mod[:6]
        c_shift, c_scale, c_gate, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(c)
        x_norm = _layer_norm(x)
        attn, ctx_attn = self.attn(_modulate(x_norm, shift, scale), _modulate(_layer_norm(context), c_shift, c_scale),
                                   attention)
        x = x + gate[:, None] * attn
        if len(mod) == 9:
            x = x + mod[8][:, None] * self.attn2(_modulate(x_norm, mod[6], mod[7]), attention=attention)[0]
        x = x + gate_mlp[:, None] * self.ff(_modulate(_layer_norm(x), shift_mlp, scale_mlp))
        context = context + c_gate[:, None] * ctx_attn
        context = context + c_gate_mlp[:, None] * self.ff_context(
            _modulate(_layer_norm(context), c_shift_mlp, c_scale_mlp))
        return x, context


class _FusedSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dtype, device) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype, device=device)
        self.proj = nn.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: Tensor, attention: AttentionFn) -> Tensor:
        q, k, v = (_heads(t, self.heads) for t in self.qkv(x).chunk(3, dim=-1))
        return self.proj(attention(q, k, v))


class _MLP(nn.Module):
    def __init__(self, dim: int, dtype, device) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, 4 * dim, dtype=dtype, device=device)
        self.fc2 = nn.Linear(4 * dim, dim, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SelfAttentionBlock(nn.Module):
    """An image-only MMDiT block (Stability's ``DismantledBlock`` without context; reference names).

    Args:
        dim: token width.
        heads: attention heads.
    """

    def __init__(self, dim: int, heads: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim, dtype=dtype, device=device))
        self.attn = _FusedSelfAttention(dim, heads, dtype, device)
        self.mlp = _MLP(dim, dtype, device)

    def forward(self, x: Tensor, c: Tensor, attention: AttentionFn = scaled_dot_product) -> Tensor:
        """x :math:`(B, N, D)`, c :math:`(B, D)` -> :math:`(B, N, D)`; the attention through ``attention``."""
        shift, scale, gate, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate[:, None] * self.attn(_modulate(_layer_norm(x), shift, scale), attention)
        return x + gate_mlp[:, None] * self.mlp(_modulate(_layer_norm(x), shift_mlp, scale_mlp))


def sincos_2d_comfyui(dim: int, h: int, w: int, *, center: float = 7.5, magnitude: float = 7.5,
                      device=None) -> Tensor:
    """The position table ComfyUI's SD3.5 ControlNet adds instead of the base model's cropped one.

    Positions span ``center ± magnitude`` along the shorter side (scaled up along the longer one),
    whatever the resolution; Stability's reference and diffusers crop the base model's fixed table
    instead, so the two differ at every size.

    Args:
        dim: token width (a multiple of 4).
        h: patch rows.
        w: patch columns.
        center: middle of the position range (ComfyUI's 7.5).
        magnitude: half-width of the range along the shorter side (ComfyUI's 7.5).
        device: where to build the table.

    Returns:
        :math:`(h w, D)` float32, width half first, then height half.
    """
    small = min(h, w)
    ys = torch.linspace(center - h / small * magnitude, center + h / small * magnitude, h, device=device)
    xs = torch.linspace(center - w / small * magnitude, center + w / small * magnitude, w, device=device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    quarter = torch.arange(dim // 4, dtype=torch.float32, device=device)
    omega = 1.0 / 10000 ** (quarter / (dim / 4))

    def embed(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([embed(grid_x), embed(grid_y)], dim=1)
