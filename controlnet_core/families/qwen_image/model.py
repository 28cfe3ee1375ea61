"""Qwen-Image InstantX ControlNets (Union, Inpainting): a few Qwen-Image blocks, one residual projection each.

The control image's VAE latent (Qwen-Image's Wan-2.1 VAE, normalised per channel like the model's
latents; the Inpainting model appends the mask channel) is packed into 2x2 patches like the latent and
projected by ``controlnet_x_embedder``; that is added to the image tokens' input embedding. The image
tokens after block ``i``, projected by ``controlnet_blocks[i]``, are residual ``i``; the base model adds it
after each of ``ceil(N_base / N)`` consecutive blocks (:func:`expand_to_base`).

Positions are Qwen-Image's 3-axis rotary ones, centred on the image: row ``r`` of ``h`` token rows sits at
``r - ceil(h / 2)`` (diffusers' ``QwenEmbedRope(scale_rope=True)``), text token ``j`` at
``max(h // 2, w // 2) + j`` on all three axes. ComfyUI centres odd grids one row lower (``r - h // 2``):
``centre="comfyui"`` follows it; even grids agree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal, Optional, Tuple

import torch
from torch import Tensor, nn

from ...errors import ControlNetInputError
from ...family import VAE_DOWNSCALE, HintInput, check_hint_batch
from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.embeddings import per_row
from ...layers.norms import WeightRMSNorm
from ...layers.rotary import check_head_split, rope_frequencies
from ...layers.tokens import pack_patches
from ...residuals import ControlResiduals
from .blocks import QwenImageBlock, QwenTimestepEmbedder

__all__ = ["PATCH", "Centre", "QwenImageControlNet", "QwenImageControlNetConfig", "expand_to_base",
           "position_ids"]

PATCH = 2
"""Latent pixels per image-token side."""

Centre = Literal["reference", "comfyui"]


@dataclass(frozen=True)
class QwenImageControlNetConfig:
    """Shape of a Qwen-Image InstantX ControlNet.

    Attributes:
        hidden_size: token width (3072).
        num_heads: attention heads (24).
        depth: transformer blocks, each giving one residual (5 in InstantX's files).
        in_channels: latent channels before 2x2 packing (16).
        context_dim: width of the Qwen2.5-VL text tokens (3584).
        mlp_hidden: hidden width of the MLPs (4x ``hidden_size``).
        hint_channels: channels of the hint latent before packing: ``in_channels`` (Union), or one more
            for the mask (Inpainting: 17, packed 68).
        axes_dim: head channels of the rotary frame, row and column axes (``(16, 56, 56)``).
        theta: rotary base period.
        centre: where odd token grids are centred (see the module docstring).
        family: base-model family this ControlNet fits.
    """

    hidden_size: int = 3072
    num_heads: int = 24
    depth: int = 5
    in_channels: int = 16
    context_dim: int = 3584
    mlp_hidden: int = 12288
    hint_channels: int = 16
    axes_dim: Tuple[int, ...] = (16, 56, 56)
    theta: float = 10000.0
    centre: Centre = "reference"
    family: str = "qwen_image"

    def __post_init__(self) -> None:
        check_head_split(self.hidden_size, self.num_heads, self.axes_dim)
        if self.centre not in ("reference", "comfyui"):
            raise ValueError(f"centre must be 'reference' or 'comfyui', not {self.centre!r}")

    @property
    def is_inpainting(self) -> bool:
        """The hint carries a mask channel after the latent (InstantX Inpainting)."""
        return self.hint_channels > self.in_channels


def position_ids(num_txt: int, grid: Tuple[int, int], device=None, centre: Centre = "reference") -> Tensor:
    """:math:`(T + h w, 3)` rotary positions: the text tokens, then the image tokens row by row.

    Example:
        >>> position_ids(1, (3, 2)).int().tolist()
        [[1, 1, 1], [0, -2, -1], [0, -2, 0], [0, -1, -1], [0, -1, 0], [0, 0, -1], [0, 0, 0]]
        >>> position_ids(0, (3, 2), centre="comfyui")[:, 1].int().tolist()
        [-1, -1, 0, 0, 1, 1]
    """
    h, w = grid
    # The reference puts the extra row of an odd grid above the centre, ComfyUI below it.
    first = (lambda n: -(n - n // 2)) if centre == "reference" else (lambda n: -(n // 2))
    rows = torch.arange(h, device=device) + first(h)
    cols = torch.arange(w, device=device) + first(w)
    rows, cols = torch.meshgrid(rows, cols, indexing="ij")
    img = torch.stack((torch.zeros_like(rows), rows, cols), dim=-1).reshape(h * w, 3)
    start = max(h // 2, w // 2)
    txt = torch.arange(start, start + num_txt, device=device)[:, None].expand(num_txt, 3)
    return torch.cat((txt, img)).float()


def _spatial(t: Tensor, what: str) -> Tensor:
    """A ComfyUI Qwen-Image latent is :math:`(B, C, 1, H, W)` (a one-frame video); the net takes 4-D."""
    if t.ndim == 5:
        if t.shape[2] != 1:
            raise ControlNetInputError(f"{what} has {t.shape[2]} frames; Qwen-Image ControlNets take one image")
        return t[:, :, 0]
    return t


class QwenImageControlNet(nn.Module):
    """Qwen-Image InstantX ControlNet producing one residual per block for the image tokens.

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating.

    Example:
        >>> cfg = QwenImageControlNetConfig(hidden_size=32, num_heads=2, depth=2, in_channels=4, context_dim=8,
        ...                                 mlp_hidden=64, hint_channels=4, axes_dim=(8, 4, 4))
        >>> net = QwenImageControlNet(cfg)
        >>> res = net(torch.zeros(1, 4, 4, 6), torch.tensor([0.5]), torch.zeros(1, 3, 8), torch.zeros(1, 4, 4, 6))
        >>> [tuple(t.shape) for t in res.input]
        [(1, 6, 32), (1, 6, 32)]
    """

    family: ClassVar[str] = "qwen_image"
    hint_input: ClassVar[HintInput] = "latent"
    step_invariant: ClassVar[bool] = False

    def __init__(self, config: QwenImageControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        dim = config.hidden_size
        self.time_text_embed = QwenTimestepEmbedder(dim, **kw)
        self.txt_norm = WeightRMSNorm(config.context_dim, **kw)
        self.img_in = nn.Linear(config.in_channels * PATCH * PATCH, dim, **kw)
        self.txt_in = nn.Linear(config.context_dim, dim, **kw)
        self.transformer_blocks = nn.ModuleList(
            QwenImageBlock(dim, config.num_heads, config.mlp_hidden, **kw) for _ in range(config.depth))
        self.controlnet_blocks = nn.ModuleList(nn.Linear(dim, dim, **kw) for _ in range(config.depth))
        self.controlnet_x_embedder = nn.Linear(config.hint_channels * PATCH * PATCH, dim, **kw)

    @property
    def num_residuals(self) -> int:
        """One residual per block."""
        return self.config.depth

    @property
    def residual_layout(self) -> str:
        """What ``block_weights`` lists."""
        return f"{self.config.depth} transformer blocks"

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The control image is encoded by the VAE to the latent's size: 8 pixels per latent pixel."""
        return height * VAE_DOWNSCALE, width * VAE_DOWNSCALE

    def check_inputs(self, x: Tensor, context: Tensor, hint: Tensor) -> None:
        """Raise :class:`ControlNetInputError` naming the first (4-D) input that does not fit."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ControlNetInputError(f"latent x must be (B, {cfg.in_channels}, h, w); got {tuple(x.shape)}")
        what = "VAE-encoded hint latent" + (" with its mask channel" if cfg.is_inpainting else "")
        if hint.ndim != 4 or hint.shape[1] != cfg.hint_channels:
            raise ControlNetInputError(f"the {what} must be (B, {cfg.hint_channels}, h, w); got {tuple(hint.shape)}")
        if hint.shape[-2:] != x.shape[-2:]:
            raise ControlNetInputError(
                f"the {what} must have the latent's size {x.shape[-2]}x{x.shape[-1]}; "
                f"got {hint.shape[-2]}x{hint.shape[-1]}")
        check_hint_batch(hint, x)
        if context.ndim != 3 or context.shape[-1] != cfg.context_dim:
            raise ControlNetInputError(
                f"text tokens must be (B, T, {cfg.context_dim}) for this Qwen-Image ControlNet; "
                f"got {tuple(context.shape)}")

    def embed_hint(self, hint: Tensor, *, control_type=None) -> Tensor:
        """The hint's addition to the image tokens, :math:`(B, N, D)`; it does not depend on the step.

        Args:
            hint: the normalised VAE latent (with the mask channel last for Inpainting),
                :math:`(B, C_h, h, w)` or ComfyUI's :math:`(B, C_h, 1, h, w)`.
            control_type: unused (the Union model has no mode input).
        """
        hint = _spatial(hint, "the hint latent").to(self.controlnet_x_embedder.weight.dtype)
        return self.controlnet_x_embedder(pack_patches(hint, PATCH)[0])

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, hint: Tensor, y: Optional[Tensor] = None, *,
                control_type=None, hint_embedding: Optional[Tensor] = None,
                attention: AttentionFn = scaled_dot_product) -> ControlResiduals:
        r"""Compute the ControlNet's own residuals.

        Args:
            x: the latent the Qwen-Image model sees, :math:`(B, C, h, w)` or :math:`(B, C, 1, h, w)`.
            timesteps: flow time in 0..1 (ComfyUI's Qwen-Image timestep, diffusers' ``t / 1000``),
                :math:`(B,)` or a scalar.
            context: Qwen2.5-VL text tokens, :math:`(B, T, 3584)`.
            hint: normalised VAE latent of the control image :math:`(B \text{ or } 1, C_h, h, w)` (or 5-D).
            y: unused (Qwen-Image has no pooled vector).
            control_type: unused.
            hint_embedding: :meth:`embed_hint` of ``hint``, computed earlier.
            attention: the attention kernel (:mod:`...layers.attention`), e.g. the host's.

        Returns:
            :class:`ControlResiduals` with one :math:`(B, hw, D)` tensor per block in ``input``
            (diffusers' ``controlnet_block_samples`` at ``conditioning_scale=1``), in the weights' dtype.
        """
        x, hint = _spatial(x, "latent x"), _spatial(hint, "the hint latent")
        self.check_inputs(x, context, hint)
        dtype = self.img_in.weight.dtype
        batch = x.shape[0]
        img, grid = pack_patches(x.to(dtype), PATCH)
        cond = self.embed_hint(hint) if hint_embedding is None else hint_embedding.to(dtype)
        img = self.img_in(img) + cond
        temb = self.time_text_embed(per_row(timesteps, batch).to(x.device))
        txt = self.txt_in(self.txt_norm(context.to(dtype)))
        cfg = self.config
        rope = rope_frequencies(position_ids(txt.shape[1], grid, x.device, cfg.centre), cfg.axes_dim, cfg.theta)

        residuals = []
        last = len(self.transformer_blocks) - 1
        for i, (block, project) in enumerate(zip(self.transformer_blocks, self.controlnet_blocks)):
            img, txt = block(img, txt, temb, rope, attention, image_only=i == last)
            residuals.append(project(img))
        return ControlResiduals(input=tuple(residuals))


def expand_to_base(residuals: ControlResiduals, num_base_blocks: int) -> ControlResiduals:
    """Spread the ControlNet's residuals over the base model's blocks, as diffusers and ComfyUI do.

    Residual ``i`` serves ``ceil(N_base / N)`` consecutive base blocks (diffusers' ``index // interval``);
    trailing residuals may go unused. Repeated entries are the same tensor, so per-residual scaling must
    happen before this.

    Args:
        residuals: :meth:`QwenImageControlNet.forward` output.
        num_base_blocks: transformer blocks of the base model (60 in Qwen-Image; read it from the model).

    Returns:
        :class:`ControlResiduals` with ``num_base_blocks`` entries in ``input``.

    Example:
        >>> r = ControlResiduals(input=(torch.zeros(1), torch.ones(1)))
        >>> [t.item() for t in expand_to_base(r, 3).input]
        [0.0, 0.0, 1.0]
    """
    items = tuple(residuals.input)
    if not items or num_base_blocks <= 0:
        return ControlResiduals()
    interval = math.ceil(num_base_blocks / len(items))
    return ControlResiduals(input=tuple(items[i // interval] for i in range(num_base_blocks)))
