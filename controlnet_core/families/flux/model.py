"""Flux ControlNets: a Flux transformer without its final layer, one residual projection per block.

Two ways to feed the control image, both read from the weights:

* ``latent`` (InstantX, Shakker-Labs Union / Union Pro): the caller encodes the control image with
  the Flux VAE (scaled and shifted like the model's latents); it is packed into 2x2 patches and
  projected by ``pos_embed_input`` (diffusers: ``controlnet_x_embedder``).
* ``pixels`` (XLabs, Mistoline): the image in 0..1 goes through a stack of convolutions (three of
  stride 2) to latent size, then is packed and projected the same way.

The image tokens see the projected hint added to their input embedding; union models prepend a
learnt mode token to the text. Each double block's image tokens, projected by
``controlnet_blocks[i]``, are one residual; each single block's image part, projected by
``controlnet_single_blocks[i]``, another. :func:`expand_to_base` spreads them over the base
model's blocks.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...layers.attention import AttentionFn, scaled_dot_product
from .blocks import DoubleStreamBlock, MLPEmbedder, SingleStreamBlock
from .tokens import PATCH, position_ids
from ...errors import ControlNetInputError
from ...family import VAE_DOWNSCALE, HintInput, check_hint_batch
from ...layers.embeddings import per_row, timestep_embedding
from ...layers.rotary import check_head_split, rope_frequencies
from ...layers.tokens import pack_patches
from ...residuals import ControlResiduals

__all__ = ["FLUX_UNION_MODES", "FluxControlNet", "FluxControlNetConfig", "RepeatMode", "expand_to_base"]

FLUX_UNION_MODES = ("canny", "tile", "depth", "blur", "pose", "gray", "low quality")
"""Mode names of the InstantX / Shakker-Labs union models, by index (``control_type``).

ComfyUI's ``SetUnionControlNetType`` offers the SDXL union's list instead, so its names are wrong
for these models (Comfy-Org/ComfyUI#4823).
"""

RepeatMode = Literal["consecutive", "tile", "tile_all"]


@dataclass(frozen=True)
class FluxControlNetConfig:
    """Shape of a Flux ControlNet.

    Attributes:
        hidden_size: token width (3072 in Flux).
        num_heads: attention heads (24 in Flux).
        depth: double-stream blocks, each giving one residual.
        depth_single_blocks: single-stream blocks, each giving one residual.
        in_channels: latent channels before 2x2 packing (16 in Flux).
        context_dim: width of the T5 text tokens (4096).
        adm_in_channels: width of the pooled CLIP vector ``y`` (768).
        mlp_hidden: hidden width of the MLPs (4x ``hidden_size``).
        qkv_bias: the fused QKV projections of the double blocks have biases.
        guidance_embed: the model embeds a guidance value (ControlNets trained on Flux dev).
        axes_dim: head channels given to the rotary embedding of each position axis.
        theta: rotary embedding base period.
        num_union_modes: rows of the union mode embedding; 0 for single-purpose models.
        hint_input: ``"latent"`` (a VAE latent) or ``"pixels"`` (an image in 0..1).
        hint_channels: channels of the hint as given (latent channels, 17 for latent + inpaint
            mask; 3 for pixels).
        hint_convs: ``(in, out, kernel, stride)`` of each hint convolution (SiLU between them);
            empty for latent hints.
        residual_activation: a SiLU follows each residual projection (Mistoline).
        repeat_mode: how :func:`expand_to_base` spreads residuals over the base model's blocks.
        family: base-model family this ControlNet fits.
    """

    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 19
    depth_single_blocks: int = 38
    in_channels: int = 16
    context_dim: int = 4096
    adm_in_channels: int = 768
    mlp_hidden: int = 12288
    qkv_bias: bool = True
    guidance_embed: bool = True
    axes_dim: Tuple[int, ...] = (16, 56, 56)
    theta: float = 10000.0
    num_union_modes: int = 0
    hint_input: HintInput = "latent"
    hint_channels: int = 16
    hint_convs: Tuple[Tuple[int, int, int, int], ...] = ()
    residual_activation: bool = False
    repeat_mode: RepeatMode = "consecutive"
    family: str = "flux"

    def __post_init__(self) -> None:
        check_head_split(self.hidden_size, self.num_heads, self.axes_dim)
        if (self.hint_input == "pixels") != bool(self.hint_convs):
            raise ValueError("hint_convs describe the pixel hint embedding: give them exactly when hint_input='pixels'")

    @property
    def packed_hint_channels(self) -> int:
        """Width of a packed hint token, the input of ``pos_embed_input``."""
        channels = self.hint_convs[-1][1] if self.hint_convs else self.hint_channels
        return channels * PATCH * PATCH


class FluxControlNet(nn.Module):
    """Flux ControlNet producing per-block residuals for the image tokens.

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating.

    Example:
        >>> cfg = FluxControlNetConfig(hidden_size=32, num_heads=2, depth=1, depth_single_blocks=1, in_channels=4,
        ...                            context_dim=8, adm_in_channels=8, mlp_hidden=64, axes_dim=(4, 4, 8),
        ...                            hint_channels=4)
        >>> net = FluxControlNet(cfg)
        >>> res = net(torch.zeros(1, 4, 8, 8), torch.tensor([0.5]), torch.zeros(1, 3, 8), torch.zeros(1, 4, 8, 8),
        ...           torch.zeros(1, 8), guidance=torch.tensor([3.5]))
        >>> [tuple(t.shape) for t in res.tensors]
        [(1, 16, 32), (1, 16, 32)]
    """

    def __init__(self, config: FluxControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        dim = config.hidden_size
        self.img_in = nn.Linear(config.in_channels * PATCH * PATCH, dim, **kw)
        self.time_in = MLPEmbedder(256, dim, **kw)
        self.vector_in = MLPEmbedder(config.adm_in_channels, dim, **kw)
        self.guidance_in = MLPEmbedder(256, dim, **kw) if config.guidance_embed else None
        self.txt_in = nn.Linear(config.context_dim, dim, **kw)
        self.double_blocks = nn.ModuleList(
            DoubleStreamBlock(dim, config.num_heads, config.mlp_hidden, config.qkv_bias, **kw)
            for _ in range(config.depth))
        self.single_blocks = nn.ModuleList(
            SingleStreamBlock(dim, config.num_heads, config.mlp_hidden, **kw)
            for _ in range(config.depth_single_blocks))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(dim, dim, **kw) for _ in range(config.depth))
        self.controlnet_single_blocks = nn.ModuleList(
            nn.Linear(dim, dim, **kw) for _ in range(config.depth_single_blocks))
        self.controlnet_mode_embedder = (
            nn.Embedding(config.num_union_modes, dim, **kw) if config.num_union_modes else None)
        self.pos_embed_input = nn.Linear(config.packed_hint_channels, dim, **kw)
        self.input_hint_block = self._hint_block(config.hint_convs, kw) if config.hint_convs else None

    @staticmethod
    def _hint_block(convs, kw) -> nn.Sequential:
        layers = []
        for c_in, c_out, kernel, stride in convs:
            layers += [nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, **kw), nn.SiLU()]
        return nn.Sequential(*layers[:-1])

    family: ClassVar[str] = "flux"
    step_invariant: ClassVar[bool] = False

    @property
    def hint_input(self) -> HintInput:
        """A VAE latent (InstantX, Shakker-Labs) or the image (XLabs, Mistoline), from the weights."""
        return self.config.hint_input

    @property
    def num_residuals(self) -> int:
        """One residual per double block, then one per single block."""
        return self.config.depth + self.config.depth_single_blocks

    @property
    def residual_layout(self) -> str:
        """What ``block_weights`` lists."""
        return f"{self.config.depth} double blocks, then {self.config.depth_single_blocks} single blocks"

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """8 image pixels per latent pixel: a pixel hint's own downscale, or the VAE's for a latent hint."""
        return height * VAE_DOWNSCALE, width * VAE_DOWNSCALE

    @property
    def hint_downscale(self) -> int:
        """Hint pixels per latent pixel: 1 for a latent hint, 8 for pixels."""
        return math.prod(stride for *_, stride in self.config.hint_convs)

    def check_inputs(self, x: Tensor, context: Tensor, hint: Tensor, y: Optional[Tensor],
                     guidance: Optional[Tensor]) -> None:
        """Raise :class:`ControlNetInputError` naming the first input that does not fit."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ControlNetInputError(f"latent x must be (B, {cfg.in_channels}, h, w); got {tuple(x.shape)}")
        what = "VAE-encoded hint latent" if cfg.hint_input == "latent" else "hint image"
        if hint.ndim != 4 or hint.shape[1] != cfg.hint_channels:
            raise ControlNetInputError(f"the {what} must be (B, {cfg.hint_channels}, H, W); got {tuple(hint.shape)}")
        f = self.hint_downscale
        if tuple(hint.shape[-2:]) != (x.shape[-2] * f, x.shape[-1] * f):
            raise ControlNetInputError(
                f"the {what} must be {f}x the latent size: latent {x.shape[-2]}x{x.shape[-1]} needs "
                f"{x.shape[-2] * f}x{x.shape[-1] * f}, got {hint.shape[-2]}x{hint.shape[-1]}")
        check_hint_batch(hint, x)
        if context.ndim != 3 or context.shape[-1] != cfg.context_dim:
            raise ControlNetInputError(
                f"text tokens must be (B, T, {cfg.context_dim}) for this Flux ControlNet; got {tuple(context.shape)}")
        if y is not None and y.shape[-1] < cfg.adm_in_channels:
            raise ControlNetInputError(f"pooled vector y is {y.shape[-1]} wide; this model needs {cfg.adm_in_channels}")
        if cfg.guidance_embed and guidance is None:
            raise ControlNetInputError(
                "this Flux ControlNet embeds a guidance value (trained on Flux dev); pass guidance "
                "(the FluxGuidance value, e.g. 3.5)")

    def embed_hint(self, hint: Tensor, *, control_type=None) -> Tensor:
        """The hint's contribution to the image tokens, :math:`(B, N, D)`; it does not depend on time.

        Args:
            hint: a VAE latent :math:`(B, C_h, h, w)` or an image in 0..1 :math:`(B, 3, 8h, 8w)`.
            control_type: unused (union modes enter through the text tokens).
        """
        hint = hint.to(self.pos_embed_input.weight.dtype)
        if self.input_hint_block is not None:
            hint = self.input_hint_block(hint * 2 - 1)
        return self.pos_embed_input(pack_patches(hint, PATCH)[0])

    def mode_tokens(self, control_type: Union[int, Sequence[int], None], batch: int) -> Optional[Tensor]:
        """Union mode embeddings to prepend to the text, :math:`(B, M, D)`, or None.

        ``control_type`` is one index of :data:`FLUX_UNION_MODES` or a sequence of them (one token
        each, as ComfyUI's list); None, or a model without modes, adds no token.
        """
        if self.controlnet_mode_embedder is None or control_type is None:
            return None
        modes = [int(control_type)] if isinstance(control_type, int) else [int(m) for m in control_type]
        if not modes:
            return None
        bad = [m for m in modes if not 0 <= m < self.config.num_union_modes]
        if bad:
            raise ControlNetInputError(
                f"union mode {bad[0]} does not exist; this model has modes 0..{self.config.num_union_modes - 1} "
                f"({', '.join(f'{i} {n}' for i, n in enumerate(FLUX_UNION_MODES))})")
        weight = self.controlnet_mode_embedder.weight
        return self.controlnet_mode_embedder(torch.tensor(modes, device=weight.device))[None].expand(batch, -1, -1)

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, hint: Tensor, y: Optional[Tensor] = None, *,
                guidance: Optional[Tensor] = None, control_type: Union[int, Sequence[int], None] = None,
                hint_embedding: Optional[Tensor] = None,
                attention: AttentionFn = scaled_dot_product) -> ControlResiduals:
        r"""Compute the ControlNet's own residuals.

        Args:
            x: the latent the Flux model sees, :math:`(B, C, h, w)`, unpacked.
            timesteps: flow-matching time in 0..1 (ComfyUI's Flux timestep, diffusers' ``t / 1000``),
                :math:`(B,)` or a scalar.
            context: T5 tokens, :math:`(B, T, 4096)`.
            hint: VAE latent :math:`(B \text{ or } 1, C_h, h, w)` or image in 0..1
                :math:`(B \text{ or } 1, 3, 8h, 8w)`, per ``config.hint_input``.
            y: pooled CLIP vector :math:`(B, 768)`; None uses zeros, as ComfyUI does.
            guidance: distilled guidance scale (e.g. 3.5), :math:`(B,)` or a scalar; required when
                ``config.guidance_embed``.
            control_type: union mode index or indices (see :meth:`mode_tokens`).
            hint_embedding: :meth:`embed_hint` of ``hint``, computed earlier.
            attention: the attention kernel (:mod:`.attention`), e.g. the host's.

        Returns:
            :class:`ControlResiduals` with one :math:`(B, hw, D)` tensor per double block in
            ``input`` and per single block in ``output`` (diffusers' ``controlnet_block_samples``
            and ``controlnet_single_block_samples``), in the parameters' dtype.
        """
        self.check_inputs(x, context, hint, y, guidance)
        dtype = self.img_in.weight.dtype
        batch = x.shape[0]
        img, grid = pack_patches(x.to(dtype), PATCH)
        cond = self.embed_hint(hint) if hint_embedding is None else hint_embedding.to(dtype)
        img = self.img_in(img) + cond

        vec = self.time_in(timestep_embedding(per_row(timesteps, batch) * 1000, 256).to(dtype))
        if self.guidance_in is not None:
            vec = vec + self.guidance_in(timestep_embedding(per_row(guidance, batch) * 1000, 256).to(dtype))
        y = x.new_zeros(batch, self.config.adm_in_channels) if y is None else y[:, :self.config.adm_in_channels]
        vec = vec + self.vector_in(y.to(dtype))

        txt = self.txt_in(context.to(dtype))
        modes = self.mode_tokens(control_type, batch)
        if modes is not None:
            txt = torch.cat((modes.to(dtype), txt), dim=1)
        rope = rope_frequencies(position_ids(txt.shape[1], grid, x.device), self.config.axes_dim, self.config.theta)

        # Residuals come from image tokens only: after the last block, text tokens are dead weight.
        double, text_len = [], txt.shape[1]
        for i, (block, project) in enumerate(zip(self.double_blocks, self.controlnet_blocks)):
            last = i == len(self.double_blocks) - 1 and not self.single_blocks
            img, txt = block(img, txt, vec, rope, attention, image_only=last)
            double.append(self._residual(project, img))
        joint = img if txt is None else torch.cat((txt, img), dim=1)
        single = []
        for i, (block, project) in enumerate(zip(self.single_blocks, self.controlnet_single_blocks)):
            last = i == len(self.single_blocks) - 1
            joint = block(joint, vec, rope, attention, keep_from=text_len if last else 0)
            single.append(self._residual(project, joint if last else joint[:, text_len:]))
        return ControlResiduals(input=tuple(double), output=tuple(single))

    def _residual(self, project: nn.Linear, tokens: Tensor) -> Tensor:
        out = project(tokens)
        return F.silu(out) if self.config.residual_activation else out


def _spread(items: Tuple[Tensor, ...], count: int, tile: bool) -> Tuple[Tensor, ...]:
    if not items or count == 0:
        return ()
    if tile:
        return tuple(items[i % len(items)] for i in range(count))
    interval = math.ceil(count / len(items))
    return tuple(items[i // interval] for i in range(count))


def expand_to_base(residuals: ControlResiduals, num_double: int, num_single: int, *,
                   repeat_mode: RepeatMode) -> ControlResiduals:
    """Spread a Flux ControlNet's own residuals over the base model's blocks.

    The base model adds ``input[i]`` to its image tokens after double block ``i`` and ``output[i]``
    after single block ``i``. A ControlNet usually has fewer blocks; its residuals are repeated:

    * ``"consecutive"`` (InstantX / Shakker latent-hint models): each residual serves
      ``ceil(n_base / n)`` consecutive base blocks, as diffusers' ``index // interval`` and
      ComfyUI's ``(x,) * repeat``; trailing residuals may go unused.
    * ``"tile"`` (XLabs): the whole double list repeats (``index % n``, diffusers'
      ``controlnet_blocks_repeat=True``); single residuals still repeat consecutively, as diffusers
      does. XLabs models have no single blocks, where this equals ComfyUI.
    * ``"tile_all"`` (Mistoline): both lists tile, as ComfyUI's ``ControlNetFlux`` does for every
      pixel-hint model (no diffusers reference exists for Mistoline).

    Repeated entries are the same tensor object, so per-tensor scaling must happen before this.

    Args:
        residuals: :meth:`FluxControlNet.forward` output (``input`` per ControlNet double block,
            ``output`` per single block).
        num_double: double blocks of the base model (19 in Flux).
        num_single: single blocks of the base model (38 in Flux).
        repeat_mode: see above; ``config.repeat_mode`` of the ControlNet.

    Returns:
        :class:`ControlResiduals` with ``num_double`` entries in ``input`` and ``num_single`` in
        ``output`` (either empty when the ControlNet has no such blocks).

    Example:
        >>> r = ControlResiduals(input=(torch.zeros(1), torch.ones(1)))
        >>> [t.item() for t in expand_to_base(r, 5, 0, repeat_mode="consecutive").input]
        [0.0, 0.0, 0.0, 1.0, 1.0]
        >>> [t.item() for t in expand_to_base(r, 5, 0, repeat_mode="tile").input]
        [0.0, 1.0, 0.0, 1.0, 0.0]
    """
    if repeat_mode not in ("consecutive", "tile", "tile_all"):
        raise ValueError(f"repeat_mode must be 'consecutive', 'tile' or 'tile_all', not {repeat_mode!r}")
    return ControlResiduals(
        input=_spread(tuple(residuals.input), num_double, repeat_mode != "consecutive"),
        output=_spread(tuple(residuals.output), num_single, repeat_mode == "tile_all"),
    )
