"""Residual reuse: skip the ControlNet's forward on some steps and add the residuals computed last.

ControlNet residuals change slowly between neighbouring steps, so a step may reuse the raw residuals
(before strength, keyframe, per-latent and mask weighting, which are applied fresh at every step) of an
earlier step. Two rules, both opt-in:

* ``every`` k: compute at one executed step, reuse for the next ``k - 1``;
* ``threshold``: compute again once the ControlNet's input has changed enough since the last
  computation: the relative mean absolute change of the scaled latent ``x`` plus the relative change of
  the timestep exceeds the threshold (the rule first-block caches such as TeaCache use for the base
  model, applied to the ControlNet's own input; the hint is fixed during a run).

Residuals are never reused across a run restart, a keyframe change, a window edge (the caller drops
its records outside the window) or a different batch layout (the caller keys records by shape, device,
dtype, cond/uncond rows and the rows computed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch  # noqa: F401  (the doctests use it)
from torch import Tensor

from ..residuals import ControlResiduals

__all__ = ["ResidualReuse", "ComputedResiduals", "relative_change", "should_compute"]


@dataclass(frozen=True)
class ResidualReuse:
    """When a control may reuse its last residuals.

    Attributes:
        every: compute at every ``every``-th executed step (1: every step, no reuse).
        threshold: recompute once the input changed by more than this (0: rule off).

    Example:
        >>> ResidualReuse().enabled, ResidualReuse(every=2).enabled, ResidualReuse(threshold=0.1).enabled
        (False, True, True)
    """

    every: int = 1
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"every ({self.every}) must be >= 1")
        if not self.threshold >= 0.0:
            raise ValueError(f"threshold ({self.threshold}) must be >= 0")
        if self.every > 1 and self.threshold > 0.0:
            raise ValueError("choose one reuse rule: every > 1 or threshold > 0, not both")

    @property
    def enabled(self) -> bool:
        """Whether any step may reuse residuals."""
        return self.every > 1 or self.threshold > 0.0


@dataclass(frozen=True, eq=False)
class ComputedResiduals:
    """The last computation of one batch layout.

    Attributes:
        step: the executed step it was computed at.
        keyframe: the keyframe acting then.
        x: the scaled latent the ControlNet saw, :math:`(B, C, H, W)` or tokens.
        timestep: the model timestep it saw.
        residuals: the raw (unweighted) residuals, read only (a control run inside the base model's forward
            keeps its skips as ``output``, in its residual order).
    """

    step: int
    keyframe: int
    x: Tensor
    timestep: float
    residuals: Optional[ControlResiduals]


def relative_change(now: Tensor, then: Tensor) -> float:
    """``mean|now - then| / mean|then|`` (0 when both are 0).

    Example:
        >>> round(relative_change(torch.full((2,), 1.1), torch.ones(2)), 6)
        0.1
    """
    scale = then.abs().float().mean().item()
    diff = (now.float() - then.float()).abs().mean().item()
    return 0.0 if diff == 0.0 else diff / max(scale, 1e-12)


def should_compute(policy: ResidualReuse, last: Optional[ComputedResiduals], step: int, keyframe: int,
                   x: Tensor, timestep: float) -> bool:
    """Whether this model call runs the ControlNet (True) or reuses ``last`` (False).

    Args:
        policy: the reuse rule.
        last: the last computation for this batch layout, or None.
        step: the call's executed step.
        keyframe: the keyframe acting at the call.
        x: the scaled latent the ControlNet would see.
        timestep: the model timestep it would see.
    """
    if not policy.enabled or last is None or keyframe != last.keyframe or step < last.step:
        return True
    if x.shape != last.x.shape:
        return True
    if policy.every > 1:
        return step - last.step >= policy.every
    change = relative_change(x, last.x) + abs(timestep - last.timestep) / max(abs(last.timestep), 1e-12)
    return change > policy.threshold
