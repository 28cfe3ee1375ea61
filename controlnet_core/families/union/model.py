"""ControlNet Union (xinsir ControlNet++ for SDXL, ProMax): one ControlNet, several control types.

A Union file is a diffusers-layout ControlNet plus a small hint fusion: each control type's hint
embedding is summarised to one token (its spatial mean plus a learned per-type vector), the token
goes through a residual attention block, and a projection of it is added back to the embedding as
a per-channel offset. The chosen types also enter the time embedding through a sinusoidal code of
their one-hot vector.

Semantics are diffusers' ``ControlNetUnionModel`` evaluated one batch row at a time. Its attention
(``nn.MultiheadAttention`` without ``batch_first``) runs over the batch axis, so for a single row
every token attends only to itself: the softmax is 1 and the block reduces to the value and output
projections. Tokens never mix, which also makes the latent's own token (diffusers appends it) have
no effect on the hint tokens; it is not computed here. The whole fused hint therefore depends on the
hints and types alone and is computed once per hint by :meth:`UnionControlNet.embed_hint`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..controlnet.config import ControlNetConfig
from ...errors import ControlNetInputError
from ...layers.embeddings import timestep_embedding
from ..controlnet.model import ControlNet
from ...residuals import ControlResiduals

__all__ = ["UNION_PREFIXES", "UNION_TYPE_NAMES", "UnionConfig", "UnionControlNet"]

UNION_TYPE_NAMES: Tuple[str, ...] = (
    "openpose", "depth", "hed/pidi/scribble/ted", "canny/lineart/anime_lineart/mlsd",
    "normal", "segment", "tile", "repaint",
)
"""Control types in the order of the rows of ``task_embedding`` (6 in the first release, 8 in ProMax)."""

UNION_PREFIXES = ("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")

ControlType = Union[int, Sequence[int]]
Hints = Union[Tensor, Sequence[Tensor]]


@dataclass(frozen=True)
class UnionConfig(ControlNetConfig):
    """A :class:`ControlNetConfig` plus the hint fusion's sizes.

    Attributes:
        num_control_types: rows of ``task_embedding`` (6 or 8 for the released files).
        type_embed_dim: width of the sinusoidal code of each one-hot slot (256 for SDXL).
        num_token_layers: residual attention blocks applied to the type tokens.
    """

    num_control_types: int = 8
    type_embed_dim: int = 256
    num_token_layers: int = 1

    @property
    def type_names(self) -> Tuple[str, ...]:
        """The control types this file was trained with, in index order."""
        return UNION_TYPE_NAMES[: self.num_control_types]


class _QuickGELU(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(1.702 * x)


class TokenSelfAttention(nn.Module):
    """Attention of a token with itself: the value projection followed by the output projection.

    The packed ``in_proj_weight`` of the file is kept whole so the weights load under their own
    names; its query and key thirds cannot change a one-token softmax and are not used.
    """

    def __init__(self, channels: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.channels = channels
        self.in_proj_weight = nn.Parameter(torch.empty(3 * channels, channels, dtype=dtype, device=device))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * channels, dtype=dtype, device=device))
        self.out_proj = nn.Linear(channels, channels, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        c = self.channels
        return self.out_proj(F.linear(x, self.in_proj_weight[2 * c:], self.in_proj_bias[2 * c:]))


class _TokenMLP(nn.Module):
    def __init__(self, channels: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.c_fc = nn.Linear(channels, 4 * channels, dtype=dtype, device=device)
        self.gelu = _QuickGELU()
        self.c_proj = nn.Linear(4 * channels, channels, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.c_proj(self.gelu(self.c_fc(x)))


class TokenBlock(nn.Module):
    r"""Pre-norm residual attention block over type tokens, :math:`(B, K, C) \to (B, K, C)`."""

    def __init__(self, channels: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        kw = {"dtype": dtype, "device": device}
        self.attn = TokenSelfAttention(channels, **kw)
        self.ln_1 = nn.LayerNorm(channels, **kw)
        self.mlp = _TokenMLP(channels, **kw)
        self.ln_2 = nn.LayerNorm(channels, **kw)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class _TypeEmbedding(nn.Module):
    def __init__(self, in_features: int, out_features: int, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_features, out_features, dtype=dtype, device=device)
        self.act = nn.SiLU()
        self.linear_2 = nn.Linear(out_features, out_features, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class UnionControlNet(ControlNet):
    """A ControlNet Union: the shared encoder of :class:`ControlNet` plus the multi-type hint fusion.

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device (``"meta"`` to build without allocating).

    Example:
        >>> cfg = UnionConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
        ...                   transformer_depth=(1, 0), context_dim=32, num_heads=2, type_embed_dim=8)
        >>> net = UnionControlNet(cfg)
        >>> x, t, ctx = torch.zeros(1, 4, 8, 8), torch.tensor([10.0]), torch.zeros(1, 7, 32)
        >>> hints = [torch.zeros(1, 3, 64, 64), torch.ones(1, 3, 64, 64)]
        >>> len(net(x, t, ctx, hints, control_type=[1, 3]).output)
        4
    """

    config: UnionConfig

    family: ClassVar[str] = "union"

    def __init__(self, config: UnionConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__(config, dtype=dtype, device=device)
        kw = {"dtype": dtype, "device": device}
        mc, n = config.model_channels, config.num_control_types
        self.task_embedding = nn.Parameter(torch.empty(n, mc, **kw))
        self.transformer_layes = nn.ModuleList(TokenBlock(mc, **kw) for _ in range(config.num_token_layers))
        self.spatial_ch_projs = nn.Linear(mc, mc, **kw)
        self.control_add_embedding = _TypeEmbedding(n * config.type_embed_dim, config.time_embed_dim, **kw)

    @property
    def type_names(self) -> Tuple[str, ...]:
        """Names of the control types this file has, in index order (for node menus)."""
        return self.config.type_names

    def type_indices(self, control_type: Optional[ControlType]) -> Tuple[int, ...]:
        """``control_type`` as a tuple of valid indices.

        Raises:
            ControlNetInputError: no type, a non-integer, or an index this file does not have.
        """
        if control_type is None:
            raise ControlNetInputError(
                f"a ControlNet Union needs control_type: one or more of {self._menu()}")
        indices = (control_type,) if isinstance(control_type, int) else tuple(control_type)
        if not indices:
            raise ControlNetInputError(f"control_type is empty; choose one or more of {self._menu()}")
        for i in indices:
            if isinstance(i, bool) or not isinstance(i, int):
                raise ControlNetInputError(f"control_type entries must be integers, got {i!r}; {self._menu()}")
            n = self.config.num_control_types
            if not 0 <= i < n:
                name = f" ({UNION_TYPE_NAMES[i]})" if 0 <= i < len(UNION_TYPE_NAMES) else ""
                hint = " (tile and repaint need the ProMax file)" if n == 6 and i in (6, 7) else ""
                raise ControlNetInputError(
                    f"control type {i}{name} is not in this {n}-type ControlNet Union{hint}; it has {self._menu()}")
        return indices

    def _menu(self) -> str:
        return ", ".join(f"{i} {name}" for i, name in enumerate(self.type_names))

    def _hint_list(self, hint: Hints, count: int) -> Tuple[Tensor, ...]:
        hints = (hint,) if isinstance(hint, Tensor) else tuple(hint)
        if len(hints) != count:
            raise ControlNetInputError(
                f"{count} control type(s) need {count} hint image(s), one per type in the same order; "
                f"got {len(hints)}")
        return hints

    def check_inputs(self, x: Tensor, context: Tensor, hint: Hints, y: Optional[Tensor]) -> None:
        """Raise :class:`ControlNetInputError` naming the first input (or hint) that does not fit."""
        hints = (hint,) if isinstance(hint, Tensor) else tuple(hint)
        for h in hints:
            super().check_inputs(x, context, h, y)

    def type_embedding(self, control_type: ControlType) -> Tensor:
        """The time-embedding term of the chosen types, :math:`(1, 4 C_0)`.

        Each slot of the types' one-hot vector gets its own sinusoidal code (cosine half first), as
        diffusers' ``control_type_proj``; the codes are concatenated and embedded by an MLP.
        """
        indices = self.type_indices(control_type)
        dtype, device = self.task_embedding.dtype, self.task_embedding.device
        one_hot = torch.zeros(self.config.num_control_types, device=device)
        one_hot[list(indices)] = 1.0
        code = timestep_embedding(one_hot, self.config.type_embed_dim).reshape(1, -1)
        return self.control_add_embedding(code.to(dtype))

    def embed_hint(self, hint: Hints, *, control_type: Optional[ControlType] = None) -> Tensor:
        r"""The fused hint added after the first input block, :math:`(B \text{ or } 1, C_0, H/8, W/8)`.

        Args:
            hint: one control image per type, each :math:`(B \text{ or } 1, 3, H, W)` in 0..1; a
                single tensor for a single type.
            control_type: the type index of each hint.

        Returns:
            :math:`\sum_k (E(h_k) + P(T(\bar E(h_k) + e_{t_k})))` with :math:`E` the hint embedding,
            :math:`\bar E` its spatial mean, :math:`e` the type vectors, :math:`T` the token blocks and
            :math:`P` the channel projection. It does not depend on the latent or the timestep.
        """
        indices = self.type_indices(control_type)
        hints = self._hint_list(hint, len(indices))
        fused = None
        for h, i in zip(hints, indices):
            cond = super().embed_hint(h)
            token = cond.mean(dim=(2, 3)) + self.task_embedding[i]
            for layer in self.transformer_layes:
                token = layer(token[:, None])[:, 0]
            term = cond + self.spatial_ch_projs(token)[:, :, None, None]
            fused = term if fused is None else fused + term
        return fused

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, hint: Hints, y: Optional[Tensor] = None, *,
                control_type: Optional[ControlType] = None,
                hint_embedding: Optional[Tensor] = None) -> ControlResiduals:
        """Compute the residuals for one or several control types in one pass.

        Args:
            x: the scaled latent the UNet sees, :math:`(B, 4, h, w)`.
            timesteps: model timesteps, :math:`(B,)` or a scalar.
            context: cross-attention context, :math:`(B, T, D)`.
            hint: one control image per type (see :meth:`embed_hint`).
            y: SDXL pooled-text and size vector, :math:`(B, A)`.
            control_type: an index into :attr:`type_names`, or a sequence of them (one per hint).
            hint_embedding: :meth:`embed_hint` of ``hint`` for the same types, computed earlier.

        Returns:
            :class:`ControlResiduals`: 9 + 1 tensors for SDXL, in the parameters' dtype.
        """
        indices = self.type_indices(control_type)
        hints = self._hint_list(hint, len(indices))
        self.check_inputs(x, context, hints, y)
        if hint_embedding is None:
            hint_embedding = self.embed_hint(hints, control_type=indices)
        emb = self.embed_time(timesteps, x.shape[0], y) + self.type_embedding(indices)
        return self.encode(x, emb, context, hint_embedding)
