"""img2img strength: which tail of a sigma schedule is executed.

Three rules users meet (steps = N, strength = s):

* ``diffusers``: ``init = min(int(N * s), N)``, ``t_start = max(N - init, 0)``; run the schedule's
  last ``N - t_start`` steps (``StableDiffusionImg2ImgPipeline.get_timesteps``).
  On flow-matching models (SD3, Flux) diffusers' img2img pipelines round the other way:
  ``init = min(N * s, N)`` unrounded, ``t_start = int(max(N - init, 0))``, so ``ceil(N * s)`` steps
  run (up to float rounding, reproduced exactly); the first sigma is the shifted schedule's
  ``sigmas[t_start]``, the one ``FlowMatchEulerDiscreteScheduler.scale_noise`` noises the image to.
* ``comfyui_denoise``: ComfyUI's ``denoise``: build a schedule of ``int(N / s)`` steps and run its
  last ``N`` (so N steps always execute, from a different start).
* ``round``: ComfyUI's ``SplitSigmasDenoise``: run the last ``round(N * s)`` steps of N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Tuple, get_args

from torch import Tensor

__all__ = ["MAX_SCHEDULE_STEPS", "STRENGTH_RULES", "StrengthRule", "TruncatedSchedule", "diffusers_flow_start_index",
           "diffusers_start_index", "truncate_schedule"]

StrengthRule = Literal["diffusers", "comfyui_denoise", "round"]
STRENGTH_RULES: Tuple[StrengthRule, ...] = get_args(StrengthRule)
# The most steps the comfyui_denoise rule may ask a scheduler for (steps / strength grows without bound).
MAX_SCHEDULE_STEPS = 10_000
# KSampler.set_steps runs the whole schedule above this denoise, whatever its length.
_KSAMPLER_FULL_DENOISE = 0.9999


@dataclass(frozen=True, eq=False)
class TruncatedSchedule:
    """An executed sigma schedule.

    Attributes:
        sigmas: ``executed_steps + 1`` values, first the noise the init latent gets, last the end.
        executed_steps: model steps that will run (0: nothing is sampled).
        start_index: where the executed part starts in the full schedule it was cut from.
    """

    sigmas: Tensor
    executed_steps: int
    start_index: int

    @property
    def start_sigma(self) -> float:
        """The noise level the init latent gets."""
        return float(self.sigmas[0])


def diffusers_start_index(steps: int, strength: float) -> int:
    """``t_start`` of diffusers' ``get_timesteps``.

    Example:
        >>> diffusers_start_index(20, 0.5), diffusers_start_index(10, 0.33)
        (10, 7)
    """
    init_timestep = min(int(steps * strength), steps)
    return max(steps - init_timestep, 0)


def diffusers_flow_start_index(steps: int, strength: float) -> int:
    """``t_start`` of the ``get_timesteps`` of diffusers' SD3 and Flux img2img pipelines.

    Example:
        >>> [diffusers_flow_start_index(n, s) for n, s in ((20, 0.5), (10, 0.33), (28, 0.7))]
        [10, 6, 8]
    """
    init_timestep = min(steps * strength, steps)
    return int(max(steps - init_timestep, 0))


def truncate_schedule(full_schedule: Callable[[int], Tensor], steps: int, strength: float,
                      rule: str = "diffusers", *, flow_matching: bool = False) -> TruncatedSchedule:
    """Cut the executed tail out of a schedule.

    Args:
        full_schedule: ``n -> sigmas`` giving the ``n + 1`` sigmas of an ``n``-step schedule
            (e.g. ComfyUI's ``calculate_sigmas`` for a scheduler); schedules of another length
            (ComfyUI's ``ddim_uniform`` and ``beta`` at some step counts) are cut by their own length.
        steps: the user's step count.
        strength: 0..1; 0 executes nothing, 1 the whole schedule.
        rule: one of :data:`STRENGTH_RULES`.
        flow_matching: the model samples by flow matching (SD3, Flux); the ``diffusers`` rule then
            follows diffusers' flow-matching img2img pipelines (:func:`diffusers_flow_start_index`).

    Returns:
        A :class:`TruncatedSchedule`. With 0 executed steps its ``sigmas`` holds only the final
        sigma, so samplers return the init latent untouched.

    Raises:
        ValueError: an unknown rule, strength outside 0..1, steps below 1, or a comfyui_denoise
            schedule longer than :data:`MAX_SCHEDULE_STEPS`.
    """
    if rule not in STRENGTH_RULES:
        raise ValueError(f"strength rule {rule!r} is not one of {STRENGTH_RULES}")
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must lie in 0..1, got {strength}")
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if rule == "comfyui_denoise":
        if strength == 0.0:
            full = full_schedule(steps)
            return TruncatedSchedule(full[-1:].clone(), 0, len(full) - 1)
        if strength > _KSAMPLER_FULL_DENOISE:
            full = full_schedule(steps)
            return TruncatedSchedule(full.clone(), len(full) - 1, 0)
        total = int(steps / strength)
        if total > MAX_SCHEDULE_STEPS:
            least = math.ceil(steps / MAX_SCHEDULE_STEPS * 1000) / 1000
            raise ValueError(f"the comfyui (denoise) rule with {steps} steps at strength {strength} builds a "
                             f"{total}-step schedule, more than the {MAX_SCHEDULE_STEPS} allowed; raise strength to at "
                             f"least {least}, lower steps, or use the diffusers rule")
        full = full_schedule(total)
        sigmas = full[-(steps + 1):].clone()
        return TruncatedSchedule(sigmas, len(sigmas) - 1, len(full) - len(sigmas))
    # Some schedulers return more or fewer than steps + 1 sigmas (ddim_uniform, beta): the rule
    # cuts the schedule actually returned, so strength 1 still runs all of it.
    sigmas = full_schedule(steps)
    total = len(sigmas) - 1
    if rule == "diffusers":
        start = (diffusers_flow_start_index if flow_matching else diffusers_start_index)(total, strength)
    else:
        start = total - int(round(total * strength))
    return TruncatedSchedule(sigmas[start:].clone(), total - start, start)
