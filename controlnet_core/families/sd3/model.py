"""SD3 / SD3.5 ControlNets: MMDiT blocks whose per-block outputs are added to the base model's image tokens.

Two layouts exist, told apart by their keys:

* ``instantx`` (InstantX SD3 Medium ControlNets, diffusers' ``SD3ControlNetModel`` with a
  ``pos_embed``): its own patch embedding and position table, a context embedder and joint
  blocks over image and text tokens; the hint latent enters through ``pos_embed_input``; the
  pooled text vector is replaced by zeros (diffusers' ``force_zeros_for_pooled_projection``,
  ComfyUI's ``y = zeros_like(y)``).
* ``sd35`` (Stability's SD3.5 Large blur / canny / depth ControlNets): image-only blocks, no
  patch embedding of its own: the latent is embedded by the *base model's* ``x_embedder`` and
  position table (:meth:`SD35ControlNet.with_base_embedder`); a scalar ``control_type`` in the file
  names the hint preprocessing (:mod:`.sd3_hint`).

:meth:`SD3ControlNet.forward` returns the ControlNet's own residuals, one per ControlNet block, in
diffusers' ``controlnet_block_samples`` order; :func:`expand_to_joint_blocks` spreads them over
the base model's joint blocks.

Where ComfyUI (v0.3.64) departs from diffusers and Stability's reference, each reproducible here
and tested against both sides:

* joint blocks (:func:`joint_block_indices`): SD3.5's last block gets a residual in ComfyUI and
  Stability's reference, not in diffusers; InstantX depths the ControlNet blocks do not divide
  leave ComfyUI's last blocks without one.
* SD3.5 positions (:meth:`SD35ControlNet.with_base_embedder`): ComfyUI adds its own
  resolution-independent table instead of the base model's cropped one.
* SD3.5 canny (:func:`.sd3_hint.sd35_hint_pixels`): ComfyUI's encoder sees ``255 a``, the
  reference's ``127.5 a + 0.5``.
* 17-channel inpainting hint (:func:`.sd3_hint.hint_latent`): ComfyUI drops the VAE shift that
  diffusers' inpainting pipeline keeps.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import ClassVar, List, Literal, Mapping, Optional, Tuple, get_args

import torch
from torch import Tensor, nn

from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.embeddings import per_row
from .blocks import JointBlock, PatchEmbed, SelfAttentionBlock, TimeTextEmbed, sincos_2d_comfyui
from ...errors import ControlNetInputError
from ...family import VAE_DOWNSCALE, HintInput, check_hint_batch
from ...residuals import ControlResiduals

__all__ = [
    "LAYOUTS",
    "POSITION_RULES",
    "SD3ControlNetConfig",
    "SD3ControlNet",
    "InstantXControlNet",
    "SD35ControlNet",
    "sd3_controlnet",
]

Layout = Literal["instantx", "sd35"]
PositionRule = Literal["reference", "comfyui"]
LAYOUTS: Tuple[Layout, ...] = get_args(Layout)
POSITION_RULES: Tuple[PositionRule, ...] = get_args(PositionRule)


@dataclass(frozen=True)
class SD3ControlNetConfig:
    """Shape of an SD3-family ControlNet.

    Attributes:
        layout: one of :data:`LAYOUTS`.
        hidden_size: token width :math:`D` (64 per base-model joint block in SD3: 1536 Medium, 2432 Large).
        num_heads: attention heads (``hidden_size / 64`` for every released model).
        num_layers: ControlNet blocks, one residual each.
        patch_size: latent pixels per token side.
        in_channels: latent channels the patch embedding reads.
        hint_channels: channels of the hint latent (17 = latent + mask for inpainting ControlNets).
        context_dim: width of the joint text tokens (``instantx``); None for ``sd35``.
        pooled_dim: width of the pooled text vector ``y``.
        qk_norm: RMS-normalised queries and keys.
        dual_attention_layers: blocks with a second image-only attention (SD3.5 Medium MMDiT-X).
        pos_embed_max_size: side of the ControlNet's own position table (``instantx``).
        force_zeros_for_pooled_projection: the pooled vector is replaced by zeros.
        control_type: SD3.5's stored hint type (0 blur, 1 canny, 2 depth), None when absent.
        family: the base-model family this fits.
    """

    layout: Layout
    hidden_size: int
    num_heads: int
    num_layers: int
    patch_size: int = 2
    in_channels: int = 16
    hint_channels: int = 16
    context_dim: Optional[int] = None
    pooled_dim: int = 2048
    qk_norm: bool = False
    dual_attention_layers: Tuple[int, ...] = ()
    pos_embed_max_size: Optional[int] = None
    force_zeros_for_pooled_projection: bool = False
    control_type: Optional[int] = None
    family: str = "sd3"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout {self.layout!r} is not one of {LAYOUTS}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"{self.num_heads} heads do not divide the width {self.hidden_size}")
        if self.layout == "instantx" and (self.context_dim is None or self.pos_embed_max_size is None):
            raise ValueError("the instantx layout needs context_dim and pos_embed_max_size")

    @property
    def adm_in_channels(self) -> int:
        """Width of the pooled vector ``y`` the ControlNet takes."""
        return self.pooled_dim


class SD3ControlNet(nn.Module):
    """What the SD3 and SD3.5 ControlNets share.

    The time / pooled-text embedding, the hint's patch embedding and one output projection per block;
    :func:`sd3_controlnet` builds the class of a layout.

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating.
    """

    family: ClassVar[str] = "sd3"
    hint_input: ClassVar[HintInput] = "latent"
    step_invariant: ClassVar[bool] = False
    hint_downscale = 1  # the hint is a latent of the base model's size (VAE-encoded by the caller)

    def __init__(self, config: SD3ControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        dim = config.hidden_size
        self.time_text_embed = TimeTextEmbed(dim, config.pooled_dim, **kw)
        self.pos_embed_input = PatchEmbed(config.hint_channels, dim, config.patch_size, **kw)
        self.controlnet_blocks = nn.ModuleList(nn.Linear(dim, dim, **kw) for _ in range(config.num_layers))

    @property
    def num_residuals(self) -> int:
        """One residual per ControlNet block."""
        return self.config.num_layers

    @property
    def residual_layout(self) -> str:
        """What ``block_weights`` lists."""
        return f"{self.config.num_layers} ControlNet blocks"

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The control image is VAE-encoded to the latent's size: 8 pixels per latent pixel."""
        return height * VAE_DOWNSCALE, width * VAE_DOWNSCALE

    @property
    def dtype(self) -> torch.dtype:
        """The parameters' dtype, which every input is cast to."""
        return self.controlnet_blocks[0].weight.dtype

    def _latent_embedder(self) -> PatchEmbed:
        raise NotImplementedError

    def _embed_latent(self, x: Tensor) -> Tensor:
        return self._latent_embedder()(x)

    def _blocks(self, h: Tensor, context: Optional[Tensor], c: Tensor, attention: AttentionFn) -> List[Tensor]:
        raise NotImplementedError

    def check_inputs(self, x: Tensor, context: Optional[Tensor], hint: Tensor, y: Optional[Tensor]) -> None:
        """Raise :class:`ControlNetInputError` naming the first input that does not fit."""
        cfg = self.config
        p = cfg.patch_size
        in_channels = self._latent_embedder().proj.in_channels
        if x.ndim != 4 or x.shape[1] != in_channels:
            raise ControlNetInputError(f"latent x must be (B, {in_channels}, h, w); got {tuple(x.shape)}")
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ControlNetInputError(f"latent {x.shape[-2]}x{x.shape[-1]} is not a multiple of the {p}x{p} patch; "
                                       f"use an image size that is a multiple of {8 * p} pixels")
        if hint.ndim != 4 or hint.shape[1] != cfg.hint_channels or hint.shape[-2:] != x.shape[-2:]:
            raise ControlNetInputError(
                f"hint must be a latent (B, {cfg.hint_channels}, {x.shape[-2]}, {x.shape[-1]}) like x; got "
                f"{tuple(hint.shape)}; encode the control image with the model's VAE at the latent's size")
        check_hint_batch(hint, x)
        if y is None and not cfg.force_zeros_for_pooled_projection:
            raise ControlNetInputError(f"this ControlNet takes the pooled text vector y of width {cfg.pooled_dim}")
        if y is not None and y.shape[-1] != cfg.pooled_dim:
            raise ControlNetInputError(f"y width {y.shape[-1]} != {cfg.pooled_dim}")

    def embed_hint(self, hint: Tensor, *, control_type: Optional[int] = None) -> Tensor:
        """Hint tokens added to the embedded latent, :math:`(B, N, D)`; timestep-independent.

        Args:
            hint: the hint latent in the model's latent space (:func:`.hint.hint_latent`).
            control_type: unused (SD3.5's type acts on pixels, before the VAE; see :mod:`.hint`).
        """
        return self.pos_embed_input(hint.to(self.dtype))

    def forward(self, x: Tensor, timesteps: Tensor, context: Optional[Tensor], hint: Tensor,
                y: Optional[Tensor] = None, *, control_type: Optional[int] = None,
                hint_embedding: Optional[Tensor] = None,
                attention: AttentionFn = scaled_dot_product) -> ControlResiduals:
        r"""Compute one residual per ControlNet block.

        Args:
            x: the latent as the base model sees it, :math:`(B, C, h, w)`, unpatchified.
            timesteps: model timesteps (sigma times 1000), :math:`(B,)` or a scalar.
            context: joint text tokens :math:`(B, T, C_{ctx})` (InstantX); ignored by SD3.5.
            hint: hint latent :math:`(B \text{ or } 1, C_{hint}, h, w)`.
            y: pooled text vector :math:`(B, P)`; replaced by zeros on InstantX.
            control_type: unused (see :meth:`embed_hint`).
            hint_embedding: :meth:`embed_hint` of ``hint``, computed earlier.
            attention: the attention kernel (:mod:`...layers.attention`), e.g. the host's.

        Returns:
            :class:`ControlResiduals` whose ``output`` holds one :math:`(B, hw/p^2, D)` tensor per
            block, shallow to deep (diffusers' ``controlnet_block_samples``); spread them over the
            base model with :func:`expand_to_joint_blocks`.
        """
        self.check_inputs(x, context, hint, y)
        dtype, batch = self.dtype, x.shape[0]
        timesteps = per_row(timesteps, batch)
        if self.config.force_zeros_for_pooled_projection:
            y = x.new_zeros(batch, self.config.pooled_dim)
        c = self.time_text_embed(timesteps, y.to(dtype))
        guided = self.embed_hint(hint) if hint_embedding is None else hint_embedding.to(dtype)
        h = self._embed_latent(x.to(dtype)) + guided
        return ControlResiduals(output=tuple(self._blocks(h, context, c, attention)))


class InstantXControlNet(SD3ControlNet):
    """InstantX's SD3 Medium ControlNets.

    Their own patch embedding and position table, a context embedder and joint blocks over image and
    text tokens.

    Example:
        >>> cfg = SD3ControlNetConfig("instantx", hidden_size=64, num_heads=1, num_layers=2,
        ...                           context_dim=32, pooled_dim=16, pos_embed_max_size=8,
        ...                           force_zeros_for_pooled_projection=True)
        >>> net = InstantXControlNet(cfg)
        >>> res = net(torch.zeros(1, 16, 8, 8), torch.tensor([500.0]), torch.zeros(1, 5, 32),
        ...           torch.zeros(1, 16, 8, 8))
        >>> len(res.output), tuple(res.output[0].shape)
        (2, (1, 16, 64))
    """

    def __init__(self, config: SD3ControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__(config, dtype, device)
        kw = {"dtype": dtype, "device": device}
        dim, heads = config.hidden_size, config.num_heads
        self.pos_embed = PatchEmbed(config.in_channels, dim, config.patch_size, config.pos_embed_max_size, **kw)
        self.context_embedder = nn.Linear(config.context_dim, dim, **kw)
        self.transformer_blocks = nn.ModuleList(
            JointBlock(dim, heads, config.qk_norm, i in config.dual_attention_layers, **kw)
            for i in range(config.num_layers))

    def _latent_embedder(self) -> PatchEmbed:
        return self.pos_embed

    def check_inputs(self, x: Tensor, context: Optional[Tensor], hint: Tensor, y: Optional[Tensor]) -> None:
        """Raise :class:`ControlNetInputError` naming the first input that does not fit."""
        super().check_inputs(x, context, hint, y)
        cfg = self.config
        if context is None or context.ndim != 3 or context.shape[-1] != cfg.context_dim:
            got = None if context is None else tuple(context.shape)
            raise ControlNetInputError(f"context must be (B, T, {cfg.context_dim}) joint text tokens; got {got}")

    def _blocks(self, h: Tensor, context: Optional[Tensor], c: Tensor, attention: AttentionFn) -> List[Tensor]:
        ctx = self.context_embedder(context.to(self.dtype))
        outs = []
        for block, out in zip(self.transformer_blocks, self.controlnet_blocks):
            h, ctx = block(h, ctx, c, attention)
            outs.append(out(h))
        return outs


class SD35ControlNet(SD3ControlNet):
    """Stability's SD3.5 Large ControlNets.

    Image-only blocks; the latent is embedded by the *base model's* ``x_embedder`` and position table
    (:meth:`with_base_embedder`), which the loaded file does not hold.
    """

    def __init__(self, config: SD3ControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__(config, dtype, device)
        kw = {"dtype": dtype, "device": device}
        self.pos_embed: Optional[PatchEmbed] = None
        self.position_rule: PositionRule = "reference"
        self.transformer_blocks = nn.ModuleList(SelfAttentionBlock(config.hidden_size, config.num_heads, **kw)
                                                for _ in range(config.num_layers))

    def with_base_embedder(self, base_state_dict: Mapping[str, Tensor],
                           position: PositionRule = "reference") -> "SD35ControlNet":
        """This ControlNet embedding the latent with a base model's patch embedding.

        The result shares every weight with this module, which is left as it is (a loaded ControlNet
        may serve several MODELs).

        Stability's reference and diffusers embed the latent for the SD3.5 ControlNet with the base
        model's ``x_embedder`` and its centre-cropped position table; ComfyUI copies the
        ``x_embedder`` but adds a resolution-independent table (:func:`.mmdit.sincos_2d_comfyui`).

        Args:
            base_state_dict: the base model's patch embedding, in ComfyUI / Stability names
                (``x_embedder.proj.weight``, ``x_embedder.proj.bias``, ``pos_embed``) or diffusers
                names (``pos_embed.proj.weight``, ``pos_embed.proj.bias``, ``pos_embed.pos_embed``);
                the table is not needed when ``position="comfyui"``.
            position: one of :data:`POSITION_RULES`.

        Returns:
            A shallow copy with its own module slot for the borrowed embedder.

        Raises:
            ValueError: wrong layout, unknown rule, or weights missing or of the wrong width.
        """
        if position not in POSITION_RULES:
            raise ValueError(f"position rule {position!r} is not one of {POSITION_RULES}")
        prefix = "x_embedder." if "x_embedder.proj.weight" in base_state_dict else "pos_embed."
        table_key = "pos_embed" if prefix == "x_embedder." else "pos_embed.pos_embed"
        weight = base_state_dict.get(prefix + "proj.weight")
        table = base_state_dict.get(table_key) if position == "reference" else None
        if weight is None or (position == "reference" and table is None):
            raise ValueError("the base model's x_embedder.proj.weight and pos_embed are needed; is it an SD3 model?")
        if weight.shape[0] != self.config.hidden_size or weight.shape[-1] != self.config.patch_size:
            raise ValueError(f"the base model embeds {weight.shape[-1]}x{weight.shape[-1]} patches to width "
                             f"{weight.shape[0]}; this ControlNet needs {self.config.patch_size}x"
                             f"{self.config.patch_size} patches of width {self.config.hidden_size}")
        size = None if table is None else math.isqrt(table.shape[-2])
        with torch.device("meta"):
            embed = PatchEmbed(weight.shape[1], weight.shape[0], weight.shape[-1], size)
        params = {"proj.weight": weight, "proj.bias": base_state_dict[prefix + "proj.bias"]}
        if table is not None:
            params["pos_embed"] = table.reshape(1, -1, weight.shape[0])
        device = self.controlnet_blocks[0].weight.device
        embed.load_state_dict({k: v.to(device=device, dtype=self.dtype) for k, v in params.items()}, assign=True)
        view = copy.copy(self)
        view._modules = dict(self._modules)
        view.pos_embed = embed.requires_grad_(False)
        view.position_rule = position
        return view

    def _latent_embedder(self) -> PatchEmbed:
        if self.pos_embed is None:
            raise ControlNetInputError("this SD3.5 ControlNet embeds the latent with the base model's x_embedder; "
                                       "take it with with_base_embedder(base weights) first")
        return self.pos_embed

    def _embed_latent(self, x: Tensor) -> Tensor:
        tokens = self._latent_embedder()(x)
        if self.position_rule == "comfyui":
            h, w = x.shape[-2] // self.config.patch_size, x.shape[-1] // self.config.patch_size
            tokens = tokens + sincos_2d_comfyui(self.config.hidden_size, h, w, device=x.device).to(tokens.dtype)
        return tokens

    def _blocks(self, h: Tensor, context: Optional[Tensor], c: Tensor, attention: AttentionFn) -> List[Tensor]:
        outs = []
        for block, out in zip(self.transformer_blocks, self.controlnet_blocks):
            h = block(h, c, attention)
            outs.append(out(h))
        return outs


def sd3_controlnet(config: SD3ControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> SD3ControlNet:
    """The class of ``config.layout`` (:class:`InstantXControlNet` or :class:`SD35ControlNet`), built."""
    cls = InstantXControlNet if config.layout == "instantx" else SD35ControlNet
    return cls(config, dtype=dtype, device=device)
