"""When a ControlNet acts: the start/end window in the two semantics users meet.

* ``executed_steps`` (diffusers, default): step ``i`` of the ``N`` steps actually executed is
  active unless ``i / N < start`` or ``(i + 1) / N > end``; with img2img the window covers the
  truncated schedule.
* ``model_sigma`` (ComfyUI): active while ``sigma(end) <= sigma <= sigma(start)`` where ``sigma(p)``
  is the model's noise level at fraction ``p`` of its whole training schedule.
"""
from __future__ import annotations

from typing import Optional, Sequence

__all__ = ["WINDOW_TIMINGS", "check_window", "active_at_step", "active_at_sigma", "step_index"]

WINDOW_TIMINGS = ("executed_steps", "model_sigma")


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
