"""When a ControlNet acts: the start/end window in the two semantics users meet.

* ``executed_steps`` (diffusers, default): step ``i`` of the ``N`` steps actually executed is
  active unless ``i / N < start`` or ``(i + 1) / N > end``; with img2img the window covers the
  truncated schedule.
* ``model_sigma`` (ComfyUI): active while ``sigma(end) <= sigma <= sigma(start)`` where ``sigma(p)``
  is the model's noise level at fraction ``p`` of its whole training schedule.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional, Sequence, Tuple, get_args

__all__ = ["WINDOW_TIMINGS", "WindowTiming", "ControlWindow", "check_window", "active_at_step", "active_at_sigma",
           "step_index"]

WindowTiming = Literal["executed_steps", "model_sigma"]
WINDOW_TIMINGS: Tuple[WindowTiming, ...] = get_args(WindowTiming)


def check_window(start: float, end: float) -> None:
    """Raise ValueError unless ``0 <= start < end <= 1`` (or both equal 0..1 bounds as diffusers)."""
    if not (0.0 <= start <= 1.0 and 0.0 <= end <= 1.0):
        raise ValueError(f"start ({start}) and end ({end}) must lie in 0..1")
    if start >= end:
        raise ValueError(f"start ({start}) must be smaller than end ({end})")


def active_at_step(index: int, num_steps: int, start: float, end: float) -> bool:
    """diffusers' rule: is executed step ``index`` (0-based) of ``num_steps`` inside the window?

    Example (20 steps, end 0.5 keeps steps 0..9):
        >>> [active_at_step(i, 20, 0.0, 0.5) for i in (9, 10)]
        [True, False]
    """
    return not (index / num_steps < start or (index + 1) / num_steps > end)


def active_at_sigma(sigma: float, sigma_start: float, sigma_end: float) -> bool:
    """ComfyUI's rule: active while ``sigma_end <= sigma <= sigma_start``."""
    return sigma_end <= sigma <= sigma_start


def step_index(sigma: float, sample_sigmas: Sequence[float]) -> Optional[int]:
    """Executed step a model call belongs to: ``i`` with ``sigmas[i] >= sigma > sigmas[i + 1]``.

    Multi-evaluation samplers (Heun, DPM2) call the model between two schedule sigmas; those calls
    belong to the step they refine.

    Args:
        sigma: the current model call's sigma.
        sample_sigmas: the run's schedule, ``N + 1`` descending values ending in the final sigma.

    Returns:
        The 0-based step index, or None when ``sigma`` lies above the schedule.
    """
    sigmas = [float(s) for s in sample_sigmas]
    tol = 1e-5 * max(1.0, abs(sigma))
    if len(sigmas) < 2 or sigma > sigmas[0] + tol:
        return None
    for i in range(len(sigmas) - 1):
        if sigma > sigmas[i + 1] + tol:
            return i
    return len(sigmas) - 2


@dataclass(frozen=True)
class ControlWindow:
    """When a control acts, as fractions of the run and as model sigmas.

    Attributes:
        start: fraction where the control starts acting, 0..1.
        end: fraction where it stops, ``start < end <= 1``.
        timing: ``executed_steps`` (fractions of the steps actually run) or ``model_sigma``
            (fractions of the model's whole noise range).
        sigma_start: the model's sigma at ``start`` (used by ``model_sigma`` timing, and by
            ``executed_steps`` when the host does not report the run's schedule).
        sigma_end: the model's sigma at ``end``.

    Example:
        >>> w = ControlWindow(0.0, 0.5, "executed_steps", sigma_start=14.6, sigma_end=1.0)
        >>> [w.active(s, [14.6, 5.0, 2.0, 0.5, 0.0]) for s in (14.6, 5.0, 2.0, 0.5)]
        [True, True, False, False]
    """

    start: float = 0.0
    end: float = 1.0
    timing: WindowTiming = "executed_steps"
    sigma_start: float = math.inf
    sigma_end: float = 0.0

    def __post_init__(self) -> None:
        check_window(self.start, self.end)
        if self.timing not in WINDOW_TIMINGS:
            raise ValueError(f"window timing {self.timing!r} is not one of {WINDOW_TIMINGS}")
        if self.sigma_start < self.sigma_end:
            raise ValueError(f"sigma_start ({self.sigma_start}) must not be below sigma_end ({self.sigma_end})")

    @property
    def always(self) -> bool:
        """The window covers the whole run."""
        return self.start <= 0.0 and self.end >= 1.0

    def needs_schedule(self) -> bool:
        """Whether :meth:`active` needs the run's schedule to follow this window's timing."""
        return self.timing == "executed_steps" and not self.always

    def active(self, sigma: float, sample_sigmas: Optional[Sequence[float]] = None) -> bool:
        """Is a model call at ``sigma`` inside the window?

        Args:
            sigma: the call's sigma.
            sample_sigmas: the run's schedule (``N + 1`` descending values), or None when the host
                does not report it; ``executed_steps`` timing then falls back to the sigma bounds.
        """
        if self.always:
            return True
        if self.timing == "executed_steps" and sample_sigmas is not None:
            index = step_index(sigma, sample_sigmas)
            return index is not None and active_at_step(index, len(sample_sigmas) - 1, self.start, self.end)
        return active_at_sigma(sigma, self.sigma_start, self.sigma_end)
