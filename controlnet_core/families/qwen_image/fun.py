r"""Qwen-Image-2512 Fun ControlNet Union (alibaba-pai): VACE-style control blocks on the base model's embeddings.

The file holds a hint projection (``control_img_in``) and a few Qwen-Image dual-stream blocks
(``control_blocks.*``), the first with a ``before_proj``, each with an ``after_proj``. Everything else is
**borrowed from the base model** it is applied to (:meth:`QwenFunControlNet.with_base`): the latent's
``img_in``, the text's ``txt_norm`` and ``txt_in``, the timestep embedder ``time_text_embed`` and the
rotary positions. With the base model's image tokens :math:`x = \mathrm{img\_in}(x_{lat})` and the
33-channel hint :math:`h` (:mod:`.fun_hint`), packed 2x2 like the latent:

.. math::

    c_0 = \mathrm{before\_proj}(\mathrm{control\_img\_in}(h)) + x

    (c_{i+1}, txt_{i+1}) = \mathrm{block}_i(c_i, txt_i), \qquad \mathrm{skip}_i = \mathrm{after\_proj}_i(c_{i+1})

Skip ``i`` is added to the base model's image tokens after base block ``place_i`` (:func:`skip_places`),
times the control strength (linear, as the reference's ``control_context_scale``).

Reference: VideoX-Fun ``QwenImageControlTransformer2DModel`` (``control_layers`` 0, 12, 24, 36, 48 of 60,
``control_in_dim`` 132). There is no diffusers class for it.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Callable, ClassVar, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from ...errors import ControlNetInputError
from ...family import VAE_DOWNSCALE, HintInput, check_hint_batch
from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.embeddings import per_row
from ...layers.rotary import check_head_split, rope_frequencies
from ...layers.tokens import pack_patches
from ...residuals import ControlResiduals
from .blocks import QwenImageBlock
from .fun_hint import fun_hint
from .model import PATCH, Centre, _spatial, position_ids

__all__ = ["QwenFunBase", "QwenFunControlNet", "QwenFunConfig", "STRENGTH_CURVES", "StrengthCurve", "curved_strength",
           "place_skips", "skip_places"]

StrengthCurve = Literal["linear", "comfyui_sqrt"]
STRENGTH_CURVES: Tuple[StrengthCurve, ...] = ("linear", "comfyui_sqrt")
"""``linear``: residuals times the strength (the reference); ``comfyui_sqrt``: times its square root, as ComfyUI's
``QwenFunControlNet`` scales them."""


def curved_strength(strength: float, curve: StrengthCurve) -> float:
    """The factor the skips are scaled by for a strength: itself, or ComfyUI's square root (negatives as 0).

    Example:
        >>> [curved_strength(s, "comfyui_sqrt") for s in (0.25, -4.0)], curved_strength(-0.25, "linear")
        ([0.5, 0.0], -0.25)
    """
    if curve not in STRENGTH_CURVES:
        raise ValueError(f"strength curve {curve!r} is not one of {STRENGTH_CURVES}")
    return strength if curve == "linear" else math.sqrt(max(strength, 0.0))


@dataclass(frozen=True)
class QwenFunConfig:
    """Shape of a Qwen-Image Fun ControlNet, and how it is applied.

    Attributes:
        hidden_size: token width (3072).
        num_heads: attention heads (24).
        depth: control blocks, each giving one skip (5).
        in_channels: latent channels of the base model (16); the hint has ``2 * in_channels + 1``.
        mlp_hidden: hidden width of the blocks' MLPs (4x ``hidden_size``).
        axes_dim: head channels of the rotary frame, row and column axes (the base model's split).
        theta: rotary base period.
        centre: where odd token grids are centred (see :mod:`.model`).
        strength_curve: one of :data:`STRENGTH_CURVES`.
        family: base-model family this ControlNet fits.
    """

    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 5
    in_channels: int = 16
    mlp_hidden: int = 12288
    axes_dim: Tuple[int, ...] = (16, 56, 56)
    theta: float = 10000.0
    centre: Centre = "reference"
    strength_curve: StrengthCurve = "linear"
    family: str = "qwen_image"

    def __post_init__(self) -> None:
        check_head_split(self.hidden_size, self.num_heads, self.axes_dim)
        if self.strength_curve not in STRENGTH_CURVES:
            raise ValueError(f"strength curve {self.strength_curve!r} is not one of {STRENGTH_CURVES}")

    @property
    def hint_channels(self) -> int:
        """Control latent, keep mask, inpaint latent: ``2 * in_channels + 1`` (33)."""
        return 2 * self.in_channels + 1


@dataclass(frozen=True, eq=False)
class QwenFunBase:
    """The base model's embedders a Fun ControlNet runs on, under the names diffusers and ComfyUI give them.

    Held as plain callables, not submodules: the ControlNet's patcher never moves or owns them.

    Attributes:
        img_in: packed latent tokens :math:`(B, N, 4C)` to image tokens :math:`(B, N, D)`.
        txt_norm: RMS norm of the text tokens :math:`(B, T, C_t)`.
        txt_in: normalised text tokens to :math:`(B, T, D)`.
        time_text_embed: ``(t, image tokens)`` to the :math:`(B, D)` conditioning vector, ``t`` the flow time
            in 0..1 per row (the image tokens give the dtype, as in diffusers and ComfyUI).
    """

    img_in: Callable[[Tensor], Tensor]
    txt_norm: Callable[[Tensor], Tensor]
    txt_in: Callable[[Tensor], Tensor]
    time_text_embed: Callable[[Tensor, Tensor], Tensor]


class QwenFunControlBlock(QwenImageBlock):
    """A Qwen-Image block with the Fun projections: ``after_proj`` (its skip) and, on block 0, ``before_proj``."""

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, first: bool,
                 dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__(dim, num_heads, mlp_hidden, dtype=dtype, device=device)
        if first:
            self.before_proj = nn.Linear(dim, dim, dtype=dtype, device=device)
        self.after_proj = nn.Linear(dim, dim, dtype=dtype, device=device)


class QwenFunControlNet(nn.Module):
    """Qwen-Image Fun ControlNet producing one skip per control block for the base model's image tokens.

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating.

    It runs only as a view holding a base model's embedders (:meth:`with_base`).
    """

    family: ClassVar[str] = "qwen_image"
    hint_input: ClassVar[HintInput] = "latent"
    step_invariant: ClassVar[bool] = False
    borrows_base_embedders: ClassVar[bool] = True
    """Runs on the base model's embedders (:meth:`with_base`); how binders tell it from an InstantX ControlNet."""

    def __init__(self, config: QwenFunConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        dim = config.hidden_size
        self.control_img_in = nn.Linear(config.hint_channels * PATCH * PATCH, dim, **kw)
        self.control_blocks = nn.ModuleList(QwenFunControlBlock(dim, config.num_heads, config.mlp_hidden, i == 0, **kw)
                                            for i in range(config.depth))
        self.base: Optional[QwenFunBase] = None

    @property
    def num_residuals(self) -> int:
        """One skip per control block."""
        return self.config.depth

    @property
    def residual_layout(self) -> str:
        """What ``block_weights`` lists."""
        return f"{self.config.depth} control blocks"

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The control image is encoded by the VAE to the latent's size: 8 pixels per latent pixel."""
        return height * VAE_DOWNSCALE, width * VAE_DOWNSCALE

    def with_base(self, base: QwenFunBase) -> "QwenFunControlNet":
        """This ControlNet running on ``base``'s embedders; it shares every weight and is left as it is.

        A loaded ControlNet may serve several MODELs: each gets its own view.
        """
        view = copy.copy(self)
        view.base = base
        return view

    def with_config(self, **changes) -> "QwenFunControlNet":
        """A view sharing every weight (and the base) with a changed config (rotary split, strength curve)."""
        view = copy.copy(self)
        view.config = replace(self.config, **changes)
        return view

    def check_inputs(self, x: Tensor, context: Tensor, hint: Tensor) -> None:
        """Raise :class:`ControlNetInputError` naming the first (4-D) input that does not fit."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ControlNetInputError(f"latent x must be (B, {cfg.in_channels}, h, w); got {tuple(x.shape)}")
        if hint.ndim != 4 or hint.shape[1] not in (cfg.in_channels, cfg.hint_channels):
            raise ControlNetInputError(
                f"the Fun ControlNet's hint must be (B, {cfg.hint_channels}, h, w) (control latent, keep mask, "
                f"inpaint latent) or the control latent alone (B, {cfg.in_channels}, h, w); got {tuple(hint.shape)}")
        if hint.shape[-2:] != x.shape[-2:]:
            raise ControlNetInputError(f"the hint latent must have the latent's size {x.shape[-2]}x{x.shape[-1]}; "
                                       f"got {hint.shape[-2]}x{hint.shape[-1]}")
        check_hint_batch(hint, x)
        if context.ndim != 3:
            raise ControlNetInputError(f"text tokens must be (B, T, C); got {tuple(context.shape)}")

    def embed_hint(self, hint: Tensor, *, control_type=None) -> Tensor:
        """``before_proj(control_img_in(hint))``, :math:`(B, N, D)`; it depends on neither the step nor the latent.

        Args:
            hint: the 33-channel hint of :func:`.fun_hint.fun_hint`, or the 16-channel control latent alone
                (then the mask and inpaint channels are zeros, as the reference has them without a mask or
                image), :math:`(B, C_h, h, w)` or ComfyUI's :math:`(B, C_h, 1, h, w)`.
            control_type: unused (the Union model has no mode input).
        """
        hint = _spatial(hint, "the hint latent")
        if hint.shape[1] == self.config.in_channels:
            hint = fun_hint(hint)
        tokens = pack_patches(hint.to(self.control_img_in.weight.dtype), PATCH)[0]
        return self.control_blocks[0].before_proj(self.control_img_in(tokens))

    def _base(self) -> QwenFunBase:
        if self.base is None:
            raise ControlNetInputError("a Qwen-Image Fun ControlNet runs on the base model's img_in, txt_in and "
                                       "timestep embedder; take it with with_base(the base model's) first")
        return self.base

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, hint: Tensor, y: Optional[Tensor] = None, *,
                control_type=None, hint_embedding: Optional[Tensor] = None,
                attention: AttentionFn = scaled_dot_product) -> ControlResiduals:
        r"""Compute the control blocks' skips.

        Args:
            x: the latent the Qwen-Image model sees, :math:`(B, C, h, w)` or :math:`(B, C, 1, h, w)`.
            timesteps: flow time in 0..1 (ComfyUI's Qwen-Image timestep, the reference's ``t / 1000``),
                :math:`(B,)` or a scalar.
            context: Qwen2.5-VL text tokens :math:`(B, T, C_t)`, as the base model reads them.
            hint: see :meth:`embed_hint`; :math:`(B \text{ or } 1, ...)`.
            y: unused (Qwen-Image has no pooled vector).
            control_type: unused.
            hint_embedding: :meth:`embed_hint` of ``hint``, computed earlier.
            attention: the attention kernel (:mod:`...layers.attention`), e.g. the host's.

        Returns:
            :class:`ControlResiduals` with one :math:`(B, hw, D)` skip per control block in ``input``, in the
            weights' dtype (:func:`place_skips` puts them on the base model's blocks).
        """
        base = self._base()
        x, hint = _spatial(x, "latent x"), _spatial(hint, "the hint latent")
        self.check_inputs(x, context, hint)
        dtype = self.control_img_in.weight.dtype
        tokens, grid = pack_patches(x, PATCH)
        img = base.img_in(tokens)
        temb = base.time_text_embed(per_row(timesteps, x.shape[0]).to(x.device), img).to(dtype)
        txt = base.txt_in(base.txt_norm(context)).to(dtype)
        cond = self.embed_hint(hint) if hint_embedding is None else hint_embedding.to(dtype)
        c = cond + img.to(dtype)
        cfg = self.config
        rope = rope_frequencies(position_ids(txt.shape[1], grid, x.device, cfg.centre), cfg.axes_dim, cfg.theta)

        skips = []
        last = len(self.control_blocks) - 1
        for i, block in enumerate(self.control_blocks):
            c, txt = block(c, txt, temb, rope, attention, image_only=i == last)
            skips.append(block.after_proj(c))
        return ControlResiduals(input=tuple(skips))


def skip_places(num_skips: int, num_base_blocks: int) -> Tuple[int, ...]:
    """The base blocks after which the skips are added: every ``N_base // n`` blocks from block 0.

    The reference configuration spreads 5 control blocks over Qwen-Image's 60 as 0, 12, 24, 36, 48
    (``control_layers``); the file stores only the control blocks, so the rule is read from that spacing and
    applied to the base block count of the model at hand.

    Raises:
        ValueError: the base model has fewer blocks than the ControlNet has skips.

    Example:
        >>> skip_places(5, 60), skip_places(2, 7)
        ((0, 12, 24, 36, 48), (0, 3))
    """
    if num_skips <= 0 or num_base_blocks < num_skips:
        raise ValueError(f"a Fun ControlNet with {num_skips} control blocks needs a base model with at least as many "
                         f"transformer blocks; this one has {num_base_blocks}")
    stride = num_base_blocks // num_skips
    return tuple(i * stride for i in range(num_skips))


def place_skips(residuals: ControlResiduals, num_base_blocks: int) -> ControlResiduals:
    """The skips at their base blocks (:func:`skip_places`), None at every other block.

    Args:
        residuals: :meth:`QwenFunControlNet.forward` output (already weighted).
        num_base_blocks: transformer blocks of the base model (60 in Qwen-Image; read it from the model).

    Returns:
        :class:`ControlResiduals` with ``num_base_blocks`` entries in ``input``.

    Example:
        >>> r = ControlResiduals(input=(torch.zeros(1), torch.ones(1)))
        >>> [None if t is None else t.item() for t in place_skips(r, 5).input]
        [0.0, None, 1.0, None, None]
    """
    skips = tuple(residuals.input)
    slots: list = [None] * num_base_blocks
    for place, skip in zip(skip_places(len(skips), num_base_blocks), skips):
        slots[place] = skip
    return ControlResiduals(input=tuple(slots))
