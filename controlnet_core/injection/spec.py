"""How one control acts during sampling, fixed when the Apply node runs."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from torch import Tensor

from .hint import RESIZE_MODES, ResizeMode
from .keyframes import StrengthSchedule
from .latents import LatentStrengths
from .reuse import ResidualReuse
from .window import ControlWindow

__all__ = ["InjectionSpec"]


@dataclass(frozen=True, eq=False)
class InjectionSpec:
    """Everything but the model that decides what a control adds at a model call.

    Attributes:
        hint: the control image, :math:`(N, C, H, W)` in 0..1 (one for every latent, or one per latent).
        scales: one multiplier per residual, in :attr:`ControlResiduals.tensors` order.
        uncond_multiplier: multiplier for the unconditional rows (0 skips the control there).
        mask: where the control acts, :math:`(N, 1, H, W)` in 0..1 at any size, or None for everywhere.
        window: when the control acts.
        resize_mode: how the hint is fitted to the latent grid.
        schedule: strength keyframes (their strength multiplies ``scales``), or None for a constant strength.
        latent_strengths: a multiplier per latent of the batch (overrides the keyframes' own, as ACN's
            ``latent_kf_override``), or None.
        reuse: when a step may reuse the residuals of an earlier one (off by default).

    Example:
        >>> import torch
        >>> spec = InjectionSpec(torch.zeros(1, 3, 64, 64), scales=(1.0,) * 13)
        >>> spec.window.always, spec.skips_everything
        (True, False)
    """

    hint: Tensor
    scales: Tuple[float, ...]
    uncond_multiplier: float = 1.0
    mask: Optional[Tensor] = None
    window: ControlWindow = ControlWindow()
    resize_mode: ResizeMode = "crop"
    schedule: Optional[StrengthSchedule] = None
    latent_strengths: Optional[LatentStrengths] = None
    reuse: ResidualReuse = ResidualReuse()

    def __post_init__(self) -> None:
        if self.hint.ndim != 4:
            raise ValueError(f"hint must be (N, C, H, W); got {tuple(self.hint.shape)}")
        if self.mask is not None and (self.mask.ndim != 4 or self.mask.shape[1] != 1):
            raise ValueError(f"mask must be (N, 1, H, W); got {tuple(self.mask.shape)}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize mode {self.resize_mode!r} is not one of {RESIZE_MODES}")
        object.__setattr__(self, "scales", tuple(float(s) for s in self.scales))

    @property
    def skips_everything(self) -> bool:
        """Every scale is 0: the control adds nothing and its forward never needs to run."""
        return not any(self.scales)
