r"""Z-Image (Turbo) Fun ControlNets (alibaba-pai, VACE-style): a control stream beside the base model's tokens.

The control context (the VAE latent of the control image; for 2.x also a keep-mask channel and the latent of
the masked inpaint image, see :mod:`.hint`) is cut into 2x2 patches like the latent and projected by
``control_all_x_embedder``. The base model has no ``control`` input, so the control runs in two stages
inside the base model's forward (the authors' reference, VideoX-Fun ``z_image_transformer2d_control.py``):

1. **Refiner stage**, on the image tokens before the base noise refiner, :math:`x_0`:
   v1 runs two plain blocks on the stream alone; 2.1 runs ``control_noise_refiner`` (control blocks, the first
   mixing :math:`x_0` in) and adds skip :math:`i` to the base model's tokens after its noise-refiner block
   :math:`i`; the broken 2.0 release runs ``control_layers`` there instead (its refiner weights are zeros).
2. **Main stage**, on the unified sequence (image and caption tokens) before the base model's main layers,
   :math:`u_0`: the stream's image tokens replace :math:`u_0`'s, its caption tokens are :math:`u_0`'s; control
   layer :math:`k`'s skip is added to the whole unified sequence after main layer ``places[k]``.

:class:`ZImageControlNet` computes the two stages from tensors the host's base model gives it; the host's
forward adds the skips (see the node side's Z-Image binding). Every tensor is token-major,
:math:`(B, N, D)`, in the order of the host's sequence; nothing here depends on that order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Iterator, Literal, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ControlNetInputError
from ...family import VAE_DOWNSCALE, HintInput
from ...layers.attention import AttentionFn, scaled_dot_product
from ...layers.rotary import Rope
from ...layers.tokens import token_grid
from .blocks import ZImageBlock, ZImageControlBlock

__all__ = ["BASE_DEPTH", "PATCH", "SEQ_MULTIPLE", "RefinerKind", "ZImageControlNet", "ZImageControlNetConfig",
           "default_places", "patchify", "position_ids", "sequence_weights"]

PATCH = 2
"""Latent pixels per image-token side."""

SEQ_MULTIPLE = 32
"""The base model pads its image and caption token runs to a multiple of this with learnt pad tokens."""

BASE_DEPTH = 30
"""Main layers of Z-Image (Turbo); the files' control layers are spread evenly over them."""

RefinerKind = Literal["plain", "control_noise_refiner", "control_layers"]
"""What runs in the refiner stage: v1's two plain blocks (no skips), 2.1's control refiner, or 2.0's control
layers (its refiner weights are all zero)."""


def default_places(num_layers: int, base_depth: int = BASE_DEPTH) -> Tuple[int, ...]:
    """The main layers the control layers' skips follow: evenly spread from layer 0.

    Not stored in the files; every release spreads them so (v1: 6, 2.x: 15, 2.1-lite: 3 layers).

    Example:
        >>> default_places(6), default_places(3)
        ((0, 5, 10, 15, 20, 25), (0, 10, 20))
    """
    step = base_depth // num_layers
    return tuple(range(0, step * num_layers, step))


@dataclass(frozen=True)
class ZImageControlNetConfig:
    """Shape and version of a Z-Image Fun ControlNet.

    Attributes:
        hidden_size: token width (3840).
        num_heads: attention heads (30).
        ffn_hidden: SwiGLU hidden width (10240).
        adaln_dim: width of the timestep embedding the blocks' modulation reads (256).
        places: main layer after which each control layer's skip is added (see :func:`default_places`).
        refiner: the refiner stage (see :data:`RefinerKind`).
        refiner_depth: blocks of ``control_noise_refiner`` (2; the base model's noise refiner has as many).
        hint_channels: control-context channels before patching: 16 (v1: the control latent) or 33 (2.x:
            control latent 16, keep-mask 1, masked-image latent 16).
        in_channels: channels of the base model's latent (16, the Flux VAE's).
        axes_dim: head channels of the rotary frame per axis (caption/frame, rows, columns).
        theta: rotary base period.
        family: base-model family this ControlNet fits.
    """

    hidden_size: int = 3840
    num_heads: int = 30
    ffn_hidden: int = 10240
    adaln_dim: int = 256
    places: Tuple[int, ...] = default_places(15)
    refiner: RefinerKind = "control_noise_refiner"
    refiner_depth: int = 2
    hint_channels: int = 33
    in_channels: int = 16
    axes_dim: Tuple[int, ...] = (32, 48, 48)
    theta: float = 256.0
    family: str = "z_image"

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden size {self.hidden_size} is not a multiple of {self.num_heads} heads")
        head = self.hidden_size // self.num_heads
        if len(self.axes_dim) != 3 or sum(self.axes_dim) != head or any(a % 2 for a in self.axes_dim):
            raise ValueError(f"axes_dim {self.axes_dim} must be three even numbers summing to the head width {head}")
        if not self.places or self.places[0] != 0 or list(self.places) != sorted(set(self.places)):
            raise ValueError(f"places {self.places} must rise strictly from main layer 0")
        if self.refiner not in ("plain", "control_noise_refiner", "control_layers"):
            raise ValueError("refiner must be one of plain, control_noise_refiner, control_layers; "
                             f"not {self.refiner!r}")
        if self.refiner == "control_layers" and len(self.places) < self.refiner_depth:
            raise ValueError(f"the 2.0 refiner stage takes its {self.refiner_depth} skips from the control layers; "
                             f"there are {len(self.places)}")
        if self.hint_channels not in (self.in_channels, 2 * self.in_channels + 1):
            raise ValueError(f"the control context has {self.hint_channels} channels; Z-Image Fun ControlNets take "
                             f"{self.in_channels} (v1) or {2 * self.in_channels + 1} (2.x)")

    @property
    def refiner_skips(self) -> int:
        """Skips added to the base noise refiner (0 for v1)."""
        return 0 if self.refiner == "plain" else self.refiner_depth

    @property
    def takes_inpaint(self) -> bool:
        """The context carries the keep-mask and the masked image (2.x, 2.1-lite)."""
        return self.hint_channels > self.in_channels

    @property
    def version(self) -> str:
        """The release this shape belongs to, for messages: ``1.0``, ``2.0``, ``2.1`` or ``2.1-lite``."""
        if self.refiner == "plain":
            return "1.0"
        if self.refiner == "control_layers":
            return "2.0"
        return "2.1" if len(self.places) > 3 else "2.1-lite"


def patchify(latent: Tensor, patch: int = PATCH) -> Tuple[Tensor, Tuple[int, int]]:
    r"""Image tokens of a latent as Z-Image cuts them: channels last within a patch (row, column, channel).

    Odd sizes are padded circularly to whole patches, as ComfyUI pads the latent.

    Args:
        latent: :math:`(B, C, H, W)`, or :math:`(B, C, 1, H, W)`.
        patch: latent pixels per token side.

    Returns:
        :math:`(B, h w, p^2 C)` tokens, row-major, and the grid ``(h, w)``.

    Example:
        >>> tokens, grid = patchify(torch.arange(8.0).reshape(1, 2, 2, 2))
        >>> tokens.tolist(), grid
        ([[[0.0, 4.0, 1.0, 5.0, 2.0, 6.0, 3.0, 7.0]]], (1, 1))
    """
    if latent.ndim == 5:
        if latent.shape[2] != 1:
            raise ControlNetInputError(f"the control context has {latent.shape[2]} frames; Z-Image takes one image")
        latent = latent[:, :, 0]
    h, w = token_grid(tuple(latent.shape[-2:]), patch)
    pad_h, pad_w = h * patch - latent.shape[-2], w * patch - latent.shape[-1]
    if pad_h or pad_w:
        latent = F.pad(latent, (0, pad_w, 0, pad_h), mode="circular")
    b, c = latent.shape[:2]
    tokens = latent.reshape(b, c, h, patch, w, patch).permute(0, 2, 4, 3, 5, 1).reshape(b, h * w, patch * patch * c)
    return tokens, (h, w)


def position_ids(caption_len: int, grid: Tuple[int, int], image_len: int, device=None) -> Tuple[Tensor, Tensor]:
    """Rotary positions of the padded caption and image token runs, as Z-Image numbers them.

    Caption token ``j`` sits at ``(1 + j, 0, 0)``; image token ``(r, c)`` at ``(caption_len + 1, r, c)``; the
    image run's pad tokens at ``(0, 0, 0)``.

    Args:
        caption_len: caption tokens, padding included.
        grid: image-token grid ``(h, w)``.
        image_len: image tokens, padding included (at least ``h w``).
        device: where the positions are made.

    Returns:
        ``(caption_ids, image_ids)``: :math:`(L_c, 3)` and :math:`(L_x, 3)`, float.

    Example:
        >>> cap, img = position_ids(2, (1, 2), 3)
        >>> cap.int().tolist(), img.int().tolist()
        ([[1, 0, 0], [2, 0, 0]], [[3, 0, 0], [3, 0, 1], [0, 0, 0]])
    """
    h, w = grid
    caption = torch.zeros(caption_len, 3, device=device)
    caption[:, 0] = torch.arange(1, caption_len + 1, device=device)
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    image = torch.zeros(image_len, 3, device=device)
    image[:h * w, 0] = caption_len + 1
    image[:h * w, 1] = rows.flatten()
    image[:h * w, 2] = cols.flatten()
    return caption, image


class ZImageControlNet(nn.Module):
    """Z-Image Fun ControlNet: the control stream's two stages (see the module docstring).

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating.

    Example:
        >>> cfg = ZImageControlNetConfig(hidden_size=32, num_heads=2, ffn_hidden=64, adaln_dim=32, places=(0, 2),
        ...                              hint_channels=33, axes_dim=(8, 4, 4))
        >>> net = ZImageControlNet(cfg)
        >>> c = net.stream_start(net.embed_hint(torch.zeros(1, 33, 4, 6)), torch.zeros(1, 32), 32)
        >>> tuple(c.shape), net.num_residuals
        ((1, 32, 32), 4)
    """

    family: ClassVar[str] = "z_image"
    hint_input: ClassVar[HintInput] = "latent"
    step_invariant: ClassVar[bool] = False

    def __init__(self, config: ZImageControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        dim, heads, hidden, adaln = config.hidden_size, config.num_heads, config.ffn_hidden, config.adaln_dim
        self.control_layers = nn.ModuleList(
            ZImageControlBlock(dim, heads, hidden, adaln, first=i == 0, **kw) for i in range(len(config.places)))
        if config.refiner == "plain":
            refiner = (ZImageBlock(dim, heads, hidden, adaln, **kw) for _ in range(config.refiner_depth))
        else:
            refiner = (ZImageControlBlock(dim, heads, hidden, adaln, first=i == 0, **kw)
                       for i in range(config.refiner_depth))
        self.control_noise_refiner = nn.ModuleList(refiner)
        self.control_all_x_embedder = nn.ModuleDict(
            {f"{PATCH}-1": nn.Linear(PATCH * PATCH * config.hint_channels, dim, **kw)})

    @property
    def _dtype(self) -> torch.dtype:
        """The weights' dtype, which the stages compute in whatever the base model's tokens are."""
        return self.control_all_x_embedder[f"{PATCH}-1"].weight.dtype

    @property
    def num_residuals(self) -> int:
        """The refiner-stage skips, then one skip per control layer."""
        return self.config.refiner_skips + len(self.config.places)

    @property
    def residual_layout(self) -> str:
        """What ``block_weights`` lists."""
        cfg = self.config
        layers = f"{len(cfg.places)} control layers (after main layers {', '.join(map(str, cfg.places))})"
        if not cfg.refiner_skips:
            return layers
        return f"{cfg.refiner_skips} noise-refiner skips, then {layers}"

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The control image is encoded by the VAE to the latent's size: 8 pixels per latent pixel."""
        return height * VAE_DOWNSCALE, width * VAE_DOWNSCALE

    def embed_hint(self, hint: Tensor, *, control_type=None) -> Tensor:
        r"""The control context's image tokens, :math:`(B, h w, D)`; it does not depend on the step.

        Args:
            hint: control context :math:`(B, C_h, H, W)` (or :math:`(B, C_h, 1, H, W)`) at the latent's size,
                built by :func:`.hint.control_context`.
            control_type: unused (the Union models read the control kind from the image).
        """
        embedder = self.control_all_x_embedder[f"{PATCH}-1"]
        channels = hint.shape[1]
        if channels != self.config.hint_channels:
            raise ControlNetInputError(
                f"the control context has {channels} channels; this Z-Image ControlNet "
                f"({self.config.version}) takes {self.config.hint_channels}")
        return embedder(patchify(hint.to(embedder.weight.dtype))[0])

    def stream_start(self, embedding: Tensor, pad_token: Tensor, length: int) -> Tensor:
        r"""The control stream at the refiner stage: the embedding padded like the base model's image run.

        Args:
            embedding: :meth:`embed_hint` output :math:`(B, h w, D)`.
            pad_token: the base model's learnt image pad token :math:`(1, D)` (``x_pad_token``).
            length: the base model's image run, padding included.
        """
        missing = length - embedding.shape[1]
        if missing < 0:
            raise ControlNetInputError(f"the control context has {embedding.shape[1]} tokens but the latent only "
                                       f"{length}: encode the control image at the latent's size")
        pad = pad_token.to(embedding.dtype).reshape(1, 1, -1).expand(embedding.shape[0], missing, -1)
        return torch.cat((embedding, pad), dim=1)

    def refine(self, c: Tensor, x: Tensor, rope: Rope, adaln: Tensor,
               attention: AttentionFn = scaled_dot_product) -> Tuple[Tensor, Tuple[Tensor, ...]]:
        r"""The refiner stage.

        Args:
            c: :meth:`stream_start` output :math:`(B, L_x, D)`.
            x: the base model's image tokens before its noise refiner, :math:`(B, L_x, D)`, pad tokens placed.
            rope: rotary ``(cos, sin)`` of the image run (:func:`position_ids`), each :math:`(L_x, d/2)`.
            adaln: the base model's timestep embedding :math:`(B, 256)`.
            attention: the attention kernel.

        Returns:
            ``(c, skips)``: the stream for the main stage and the skips for noise-refiner blocks 0, 1, ...
            (none for v1), each :math:`(B, L_x, D)`, in the weights' dtype.
        """
        kind = self.config.refiner
        dtype = self._dtype
        c, x = c.to(dtype), x.to(dtype)
        if kind == "plain":
            for block in self.control_noise_refiner:
                c = block(c, rope, adaln, attention)
            return c, ()
        blocks = self.control_noise_refiner if kind == "control_noise_refiner" else self.control_layers
        skips = []
        for block in blocks:
            skip, c = block(c, x, rope, adaln, attention)
            skips.append(skip)
        return c, tuple(skips[:self.config.refiner_skips])

    def layer_skips(self, c: Tensor, unified: Tensor, image: slice, rope: Rope, adaln: Tensor,
                    attention: AttentionFn = scaled_dot_product) -> Iterator[Tensor]:
        r"""The main stage's skips, one per control layer, computed as they are drawn.

        Args:
            c: :meth:`refine`'s stream :math:`(B, L_x, D)`.
            unified: the base model's unified sequence before its main layers, :math:`(B, L, D)`.
            image: where the (padded) image run lies in ``unified``.
            rope: rotary ``(cos, sin)`` of the unified sequence, each :math:`(L, d/2)`.
            adaln: the base model's timestep embedding :math:`(B, 256)`.
            attention: the attention kernel.

        Yields:
            Skip ``k`` :math:`(B, L, D)` in the weights' dtype, to add after main layer ``places[k]``.
        """
        unified = unified.to(self._dtype)
        stream = unified.clone()
        stream[:, image] = c.to(unified.dtype)
        for block in self.control_layers:
            skip, stream = block(stream, unified, rope, adaln, attention)
            yield skip


def sequence_weights(row_scale: Tensor, length: int, image: slice, token_weights: Optional[Tensor] = None) -> Tensor:
    r"""One multiplier per row and token of the base sequence, for the skips (before each skip's own scale).

    Image tokens take their weight from the mask on the token grid; caption and pad tokens, which have no place
    in the image, take the mean of their row's image-token weights (a mask of ones or zeros then switches the
    whole skip on or off).

    Args:
        row_scale: :math:`(B,)` multiplier per row (the uncond multiplier).
        length: tokens of the sequence, :math:`L`.
        image: where the image tokens (grid order, before their padding) start in the sequence; its stop is
            unused.
        token_weights: :math:`(B \text{ or } 1, h w, 1)` mask weights on the token grid, or None (ones).

    Returns:
        :math:`(B, L, 1)` float32.

    Example:
        >>> w = sequence_weights(torch.tensor([1.0, 0.5]), 4, slice(1, 3), torch.tensor([[[1.0], [0.0]]]))
        >>> w[..., 0].tolist()
        [[0.5, 1.0, 0.0, 0.5], [0.25, 0.5, 0.0, 0.25]]
    """
    batch = row_scale.shape[0]
    rows = row_scale.float().reshape(batch, 1, 1)
    if token_weights is None:
        return rows.expand(batch, length, 1).clone()
    grid = token_weights.float().expand(batch, -1, 1)
    out = grid.mean(dim=1, keepdim=True).expand(batch, length, 1).clone()
    out[:, image.start:image.start + grid.shape[1]] = grid
    return out * rows.to(out.device)
