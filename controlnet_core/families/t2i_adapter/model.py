"""T2I-Adapter (TencentARC): features of the control image added after the UNet's input blocks.

An adapter sees only the hint: it pixel-unshuffles the image and runs a small residual pyramid,
one feature map per level. The features do not depend on the latent, timestep or prompt, so
:meth:`T2IAdapter.embed_hint` computes them once per image and size and every step reuses them.

Where the features land is fixed by the base model (ComfyUI ``comfy/t2i_adapter/adapter.py``,
diffusers ``down_intrablock_additional_residuals``):

* SD1.x-style (``full``, ``light``; unshuffle 8): feature ``i`` after the last residual block of
  UNet level ``i`` (input blocks 2, 5, 8, 11), before that level's downsampler.
* SDXL (``full_xl``; unshuffle 16): features 0, 1, 2 after input blocks 3 (the first
  downsampler), 5 and 8, feature 3 after the middle block.

Weights are read in four layouts, told apart by keys and shapes only: TencentARC's original full
(``conv_in``, ``body.{k}.block1``), light (``body.{i}.body.{j}``) and SDXL files, and diffusers'
``adapter.*``. The module uses diffusers' names without the prefix, plus ``body.{i}.down_conv``
for the strided-convolution downsampling of some original files (which diffusers cannot express).

Odd feature sizes are halved as ComfyUI does (zero-padded by one on both sides, padding counted
in the average); diffusers' ceil-mode pooling gives other values there. Even sizes agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import ControlNetInputError
from ...family import HintInput, check_hint_batch
from ...residuals import ControlResiduals

__all__ = ["A1111_SOFT_WEIGHTS", "HINT_CHANNELS", "LATENT_SCALE", "T2IAdapter", "T2IAdapterConfig", "feature_scales"]

LATENT_SCALE = 8
"""Hint pixels per latent pixel: the downscale of the Stable Diffusion VAEs."""

KINDS = ("full", "light", "full_xl")
A1111_SOFT_WEIGHTS = (0.25, 0.62, 0.825, 1.0)
"""sd-webui-controlnet's per-feature weights for T2I-Adapters in its soft ("prompt/ControlNet is more
important") modes, shallow to deep; ControlNets use the ``0.825 ** (12 - i)`` curve there instead."""
HINT_CHANNELS = (3, 1)
_XL_SLOTS = (None, None, None, 0, None, 1, None, None, 2)


@dataclass(frozen=True)
class T2IAdapterConfig:
    """Shape of a T2I-Adapter.

    Attributes:
        kind: ``full`` (SD1.x), ``light`` (SD1.x, bottleneck levels) or ``full_xl`` (SDXL).
        channels: output channels of each level, one feature per level.
        num_res_blocks: residual blocks per level.
        hint_channels: channels of the control image the adapter reads (3 RGB, 1 gray).
        unshuffle: pixel-unshuffle factor of the hint (8 SD1.x, 16 SDXL).
        kernel_size: kernel of each residual block's second convolution and of the channel-changing
            input convolutions (full adapters; 1 in every released file).
        conv_downsample: levels halve with a strided 3x3 convolution instead of 2x2 averaging.
        light_channels: inner width of each light level (a quarter of ``channels`` when released).
    """

    kind: str
    channels: Tuple[int, ...]
    num_res_blocks: int = 2
    hint_channels: int = 3
    unshuffle: int = LATENT_SCALE
    kernel_size: int = 1
    conv_downsample: bool = False
    light_channels: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind {self.kind!r} is not one of {KINDS}")
        if self.kind == "full_xl" and len(self.channels) != 4:
            raise ValueError("an SDXL adapter has 4 levels (3 features after input blocks, 1 after the middle)")
        if self.kind == "light" and len(self.light_channels) != len(self.channels):
            raise ValueError("a light adapter needs one inner width per level")

    @property
    def family(self) -> str:
        """The base models it fits: ``sdxl`` or ``sd1`` (any UNet laid out like SD1.x)."""
        return "sdxl" if self.kind == "full_xl" else "sd1"

    @property
    def context_dim(self) -> None:
        """Adapters read no prompt."""
        return None

    @property
    def adm_in_channels(self) -> None:
        """Adapters read no ``y`` vector."""
        return None

    @property
    def downsampled_levels(self) -> Tuple[bool, ...]:
        """Whether each level halves its input first."""
        if self.kind == "full_xl":
            return tuple(i == 2 for i in range(len(self.channels)))
        return tuple(i > 0 for i in range(len(self.channels)))

    @property
    def input_slots(self) -> Tuple[Optional[int], ...]:
        """Per UNet input block, the feature added after it (None: nothing)."""
        if self.kind == "full_xl":
            return _XL_SLOTS
        return tuple(i // 3 if i % 3 == 2 else None for i in range(3 * len(self.channels)))

    @property
    def middle_feature(self) -> Optional[int]:
        """The feature added after the middle block, if any."""
        return 3 if self.kind == "full_xl" else None


def _halve(x: Tensor) -> Tensor:
    # ComfyUI's adapter pads odd sides by one on both ends and counts the zeros in the average.
    return F.avg_pool2d(x, 2, 2, padding=(x.shape[-2] % 2, x.shape[-1] % 2))


class _ResBlock(nn.Module):
    def __init__(self, channels: int, kernel_size: int, **kw) -> None:
        super().__init__()
        self.block1 = nn.Conv2d(channels, channels, 3, padding=1, **kw)
        self.block2 = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, **kw)

    def forward(self, x: Tensor) -> Tensor:
        return self.block2(F.relu(self.block1(x))) + x


class _FullLevel(nn.Module):
    def __init__(self, c_in: int, c_out: int, config: T2IAdapterConfig, down: bool, **kw) -> None:
        super().__init__()
        ks = config.kernel_size
        self.down = down
        conv_down = down and config.conv_downsample
        self.down_conv = nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, **kw) if conv_down else None
        self.in_conv = nn.Conv2d(c_in, c_out, ks, padding=ks // 2, **kw) if c_in != c_out else None
        self.resnets = nn.Sequential(*(_ResBlock(c_out, ks, **kw) for _ in range(config.num_res_blocks)))

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = _halve(x) if self.down_conv is None else self.down_conv(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        return self.resnets(x)


class _LightLevel(nn.Module):
    def __init__(self, c_in: int, c_mid: int, c_out: int, num_res_blocks: int, down: bool, **kw) -> None:
        super().__init__()
        self.down = down
        self.in_conv = nn.Conv2d(c_in, c_mid, 1, **kw)
        self.resnets = nn.Sequential(*(_ResBlock(c_mid, 3, **kw) for _ in range(num_res_blocks)))
        self.out_conv = nn.Conv2d(c_mid, c_out, 1, **kw)

    def forward(self, x: Tensor) -> Tensor:
        if self.down:
            x = _halve(x)
        return self.out_conv(self.resnets(self.in_conv(x)))


class T2IAdapter(nn.Module):
    """T2I-Adapter producing :class:`ControlResiduals` with its features in ``input`` (and ``middle``).

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating.

    Example:
        >>> net = T2IAdapter(T2IAdapterConfig("full", channels=(8, 16, 32, 32)))
        >>> res = net(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]), None, torch.zeros(1, 3, 64, 64))
        >>> [tuple(t.shape) for t in res.tensors]
        [(1, 8, 8, 8), (1, 16, 4, 4), (1, 32, 2, 2), (1, 32, 1, 1)]
        >>> [i for i, t in enumerate(res.input) if t is not None]
        [2, 5, 8, 11]
    """

    family: ClassVar[str] = "t2i_adapter"
    hint_input: ClassVar[HintInput] = "pixels"
    step_invariant: ClassVar[bool] = True
    """The residuals depend on the hint alone: a sampler may compute them once and reuse them every step."""
    residual_layout: ClassVar[str] = "one per adapter feature, shallow to deep"

    def __init__(self, config: T2IAdapterConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        unshuffled = config.hint_channels * config.unshuffle ** 2
        chans, downs = config.channels, config.downsampled_levels
        if config.kind == "light":
            ins = (unshuffled,) + chans[:-1]
            self.body = nn.ModuleList(
                _LightLevel(ins[i], config.light_channels[i], chans[i], config.num_res_blocks, downs[i], **kw)
                for i in range(len(chans)))
        else:
            self.conv_in = nn.Conv2d(unshuffled, chans[0], 3, padding=1, **kw)
            ins = chans[:1] + chans[:-1]
            self.body = nn.ModuleList(_FullLevel(ins[i], chans[i], config, downs[i], **kw) for i in range(len(chans)))

    @property
    def num_residuals(self) -> int:
        """One feature per level."""
        return len(self.config.channels)

    @property
    def hint_downscale(self) -> int:
        """Hint pixels per latent pixel."""
        return LATENT_SCALE

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The hint size for a latent of ``height`` x ``width``: 8x, rounded up to the unshuffle factor.

        Example:
            >>> T2IAdapter(T2IAdapterConfig("full_xl", (8, 16, 32, 32), unshuffle=16)).hint_size(9, 8)
            (80, 64)
        """
        u = self.config.unshuffle
        return -(-height * LATENT_SCALE // u) * u, -(-width * LATENT_SCALE // u) * u

    def check_inputs(self, x: Tensor, hint: Tensor) -> None:
        """Raise :class:`ControlNetInputError` unless ``hint`` fits this adapter and ``x``'s size and batch."""
        cfg = self.config
        if hint.ndim != 4 or hint.shape[1] not in {3, cfg.hint_channels}:
            raise ControlNetInputError(f"hint must be (B, 3, H, W) (or {cfg.hint_channels} channels); "
                                       f"got {tuple(hint.shape)}")
        want = self.hint_size(x.shape[-2], x.shape[-1])
        if tuple(hint.shape[-2:]) != want:
            raise ControlNetInputError(
                f"this T2I-Adapter needs a {want[0]}x{want[1]} hint for a {x.shape[-2]}x{x.shape[-1]} latent "
                f"({LATENT_SCALE}x, rounded up to a multiple of {cfg.unshuffle}); got "
                f"{hint.shape[-2]}x{hint.shape[-1]}; resize the control image first")
        check_hint_batch(hint, x)

    def embed_hint(self, hint: Tensor, *, control_type=None) -> Tuple[Tensor, ...]:
        r"""The adapter's features, in diffusers' order (one per level, shallow to deep).

        Args:
            hint: control image in 0..1, :math:`(B, 3 \text{ or } C, H, W)` with H and W multiples of
                the unshuffle factor; RGB is averaged to gray for 1-channel adapters (as ComfyUI does).
            control_type: unused (other families take it).

        Returns:
            :math:`(B, C_i, H_i, W_i)` per level, in the parameters' dtype.
        """
        cfg = self.config
        if hint.shape[-2] % cfg.unshuffle or hint.shape[-1] % cfg.unshuffle:
            raise ControlNetInputError(f"hint sides must be multiples of {cfg.unshuffle}; got {tuple(hint.shape)}")
        if cfg.hint_channels == 1 and hint.shape[1] == 3:
            hint = hint.mean(1, keepdim=True)
        x = F.pixel_unshuffle(hint.to(self.body[0].resnets[0].block1.weight.dtype), cfg.unshuffle)
        if cfg.kind != "light":
            x = self.conv_in(x)
        features = []
        for level in self.body:
            x = level(x)
            features.append(x)
        return tuple(features)

    def residuals(self, features: Sequence[Tensor]) -> ControlResiduals:
        """Place features (diffusers' order) on the UNet blocks they are added after."""
        if len(features) != len(self.config.channels):
            raise ValueError(f"{len(features)} features for an adapter of {len(self.config.channels)} levels")
        middle = self.config.middle_feature
        return ControlResiduals(input=tuple(None if s is None else features[s] for s in self.config.input_slots),
                                middle=() if middle is None else (features[middle],))

    def forward(self, x: Tensor, timesteps: Tensor, context: Optional[Tensor], hint: Tensor,
                y: Optional[Tensor] = None, *, control_type=None,
                hint_embedding: Optional[Sequence[Tensor]] = None) -> ControlResiduals:
        r"""The residuals for ``x``'s batch; ``timesteps``, ``context``, ``y`` and ``x``'s values are unused.

        Args:
            x: the latent, :math:`(B, 4, h, w)`: sets the batch and the expected hint size.
            timesteps: unused (the family interface passes it).
            context: unused.
            hint: control image in 0..1, :math:`(B \text{ or } 1, 3, H, W)`, :meth:`hint_size` of ``x``.
            y: unused.
            control_type: unused.
            hint_embedding: :meth:`embed_hint` of ``hint`` (batch B or 1), computed earlier; then
                ``hint`` is only checked.

        Returns:
            Fresh tensors of batch B (the caller may scale them in place), ``.tensors`` in
            diffusers' feature order.
        """
        self.check_inputs(x, hint)
        fresh = hint_embedding is None
        features = self.embed_hint(hint) if fresh else tuple(hint_embedding)
        return self.residuals([_with_batch(f, x.shape[0], fresh) for f in features])


def feature_scales(num_features: int, strength: float = 1.0, mode: str = "balanced",
                   block_weights: Optional[Sequence[float]] = None) -> Tuple[float, ...]:
    """Multiplier per adapter feature, shallow to deep (the order of :attr:`ControlResiduals.tensors`).

    Args:
        num_features: the adapter's features (4 for every released adapter).
        strength: global scale (diffusers' ``adapter_conditioning_scale``).
        mode: ``balanced`` (strength alone), or ``prompt`` / ``controlnet``: A1111's soft weights
            :data:`A1111_SOFT_WEIGHTS` (the caller drops the uncond rows for ``controlnet``).
        block_weights: optional extra multiplier per feature.

    Example:
        >>> feature_scales(4, 2.0, "prompt")
        (0.5, 1.24, 1.65, 2.0)
    """
    if mode == "balanced":
        curve = (1.0,) * num_features
    elif num_features == len(A1111_SOFT_WEIGHTS):
        curve = A1111_SOFT_WEIGHTS
    else:
        raise ValueError(f"the soft modes weight exactly {len(A1111_SOFT_WEIGHTS)} adapter features; "
                         f"this adapter has {num_features}: use balanced")
    weights = (1.0,) * num_features if block_weights is None else tuple(block_weights)
    if len(weights) != num_features:
        raise ValueError(f"block weights need {num_features} values (one per adapter feature), got {len(weights)}")
    return tuple(strength * c * w for c, w in zip(curve, weights))


def _with_batch(feature: Tensor, batch: int, fresh: bool) -> Tensor:
    if feature.shape[0] == batch:
        return feature if fresh else feature.clone()
    if feature.shape[0] == 1:
        return feature.expand(batch, *feature.shape[1:]).contiguous()
    raise ControlNetInputError(f"hint features have batch {feature.shape[0]}; the latent batch is {batch}")
