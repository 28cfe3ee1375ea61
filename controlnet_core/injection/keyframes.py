"""Strength keyframes: a strength that changes over the steps, with ComfyUI-Advanced-ControlNet's rules.

A chain of :class:`Keyframe` (ACN's ``TimestepKeyframe``) becomes a :class:`StrengthSchedule` once the
Apply node knows the model's noise levels. At every executed step the schedule answers which keyframe
acts and the multiplier it puts on the Apply node's strength, following ACN's
``AdvancedControlBase.prepare_current_timestep``:

* the chain always starts with ACN's default keyframe (start 0, strength 1, guarantee 0); keyframes are
  ordered by ``start_percent``, equal starts in the order they were chained;
* while the current keyframe has acted fewer than ``guarantee_steps`` steps it stays; otherwise the next
  keyframes whose start has been reached are taken in order, stopping at the first one that guarantees
  steps (so one step can skip over several keyframes with ``guarantee_steps = 0``);
* a keyframe starting before the run (``start_percent`` 0, or in model-sigma timing a start noise level
  above the schedule's first) guarantees nothing;
* a keyframe's strength multiplies the Apply strength; its per-latent strengths replace the ones in
  effect, or, when it has none, are inherited (``inherit_missing``) or dropped.

"Reached" follows the window's timing (:mod:`.window`): ``executed_steps`` when ``index / N >=
start_percent`` (the step the diffusers rule starts a window at), ``model_sigma`` when the step's schedule
sigma is at or below the model's sigma at ``start_percent`` (ACN's ``start_t >= t``). ACN counts every
model call at a new sigma as a step; here the calls of multi-evaluation samplers (Heun, DPM2) belong to
the executed step they refine, so both timings count the same steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal, Optional, Sequence, Tuple, get_args

from .latents import LatentStrengths
from .window import WINDOW_TIMINGS, WindowTiming, step_index

__all__ = ["INTERPOLATIONS", "Interpolation", "Keyframe", "KeyframeChain", "StepControl", "StrengthSchedule",
           "DEFAULT_KEYFRAME", "resolve_keyframes"]

Interpolation = Literal["none", "linear"]
INTERPOLATIONS: Tuple[Interpolation, ...] = get_args(Interpolation)


@dataclass(frozen=True)
class Keyframe:
    """One strength keyframe (ACN's ``TimestepKeyframe`` without weights and masks).

    Attributes:
        start_percent: where it may start acting, 0..1, in the window's timing.
        strength: multiplies the Apply node's strength while it acts (0 skips the ControlNet).
        guarantee_steps: it acts at least this many steps once started, even if later keyframes have
            started meanwhile (ACN default 1; 0 lets a later keyframe take over in the same step).
        inherit_missing: without latent strengths of its own, keep those of the keyframe before
            (True) or act on every latent alike (False).
        latent_strengths: per batch index multipliers while it acts, or None.
        null_latent_strength: multiplier of the latents its (or inherited) latent strengths do not
            list (ACN's ``null_latent_kf_strength``, default 0).
        interpolation: ``linear`` ramps the strength step by step to the next keyframe's, reached at the
            step that keyframe starts; ``none`` holds it.
    """

    start_percent: float = 0.0
    strength: float = 1.0
    guarantee_steps: int = 1
    inherit_missing: bool = True
    latent_strengths: Optional[LatentStrengths] = None
    null_latent_strength: float = 0.0
    interpolation: Interpolation = "none"

    def __post_init__(self) -> None:
        if not 0.0 <= self.start_percent <= 1.0:
            raise ValueError(f"start_percent ({self.start_percent}) must lie in 0..1")
        if not (math.isfinite(self.strength) and self.strength >= 0.0):
            raise ValueError(f"strength ({self.strength}) must be a finite number >= 0")
        if self.guarantee_steps < 0:
            raise ValueError(f"guarantee_steps ({self.guarantee_steps}) must be >= 0")
        if not (math.isfinite(self.null_latent_strength) and self.null_latent_strength >= 0.0):
            raise ValueError(f"null_latent_strength ({self.null_latent_strength}) must be a finite number >= 0")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}")


DEFAULT_KEYFRAME = Keyframe(start_percent=0.0, strength=1.0, guarantee_steps=0)


@dataclass(frozen=True)
class KeyframeChain:
    """Keyframes in acting order: ACN's default first, then by ``start_percent`` (ties keep chain order).

    Example:
        >>> chain = KeyframeChain().then(Keyframe(0.5, 0.2)).then(Keyframe(0.25, 0.6))
        >>> [(k.start_percent, k.strength) for k in chain.keyframes]
        [(0.0, 1.0), (0.25, 0.6), (0.5, 0.2)]
    """

    keyframes: Tuple[Keyframe, ...] = (DEFAULT_KEYFRAME,)

    def then(self, keyframe: Keyframe) -> "KeyframeChain":
        """A new chain with ``keyframe`` added (this one is unchanged)."""
        return KeyframeChain(tuple(sorted(self.keyframes + (keyframe,), key=lambda k: k.start_percent)))


@dataclass(frozen=True)
class StepControl:
    """What the schedule says for one executed step.

    Attributes:
        keyframe: index of the acting keyframe in the chain (a change means other residuals).
        strength: multiplier of the Apply strength (interpolated where the keyframe asks).
        latent_strengths: per-latent multipliers in effect, or None for every latent alike.
        null_latent_strength: multiplier of latents ``latent_strengths`` does not list.
    """

    keyframe: int = 0
    strength: float = 1.0
    latent_strengths: Optional[LatentStrengths] = None
    null_latent_strength: float = 0.0

    def latent_factors(self, latent_count: int,
                       override: Optional[LatentStrengths] = None) -> Optional[Tuple[float, ...]]:
        """Multiplier per latent, or None for all 1.

        ``override`` (the Apply node's latent strengths) wins, as ACN's ``latent_kf_override``.
        """
        strengths = override if override is not None else self.latent_strengths
        return None if strengths is None else strengths.factors(latent_count, self.null_latent_strength)


def resolve_keyframes(keyframes: Sequence[Keyframe], reached: Sequence[Sequence[bool]],
                      starts_before_run: Sequence[bool]) -> Tuple[StepControl, ...]:
    """ACN's keyframe walk over the executed steps of one run.

    Args:
        keyframes: the chain in acting order.
        reached: ``reached[i][k]``: step ``i`` is at or past keyframe ``k``'s start.
        starts_before_run: keyframe ``k`` starts before the run's first step (it guarantees nothing).

    Returns:
        One :class:`StepControl` per step.
    """
    def guaranteed(k: int) -> int:
        return 0 if starts_before_run[k] else keyframes[k].guarantee_steps

    current, used, latents = -1, 0, None
    chosen = []
    for step in range(len(reached)):
        if current < 0 or used >= guaranteed(current):
            for k in range(current + 1, len(keyframes)):
                if not reached[step][k]:
                    break
                current, used = k, 0
                if keyframes[k].latent_strengths is not None:
                    latents = keyframes[k].latent_strengths
                elif not keyframes[k].inherit_missing:
                    latents = None
                if guaranteed(k) > 0:
                    break
        used += 1
        chosen.append((current, latents))
    first_step = {}
    for step, (k, _) in enumerate(chosen):
        first_step.setdefault(k, step)
    out = []
    for step, (k, latents) in enumerate(chosen):
        frame = keyframes[k]
        strength = frame.strength
        later = [j for j in first_step if j > k]
        if frame.interpolation == "linear" and later:
            nxt = min(later)
            span = first_step[nxt] - first_step[k]
            strength += (keyframes[nxt].strength - strength) * (step - first_step[k]) / span
        out.append(StepControl(k, strength, latents, frame.null_latent_strength))
    return tuple(out)


@dataclass(frozen=True)
class StrengthSchedule:
    """A keyframe chain bound to a model's noise levels: the strength at every model call.

    Attributes:
        chain: the keyframes.
        timing: ``executed_steps`` or ``model_sigma`` (as the Apply node's window).
        start_sigmas: the model's sigma at each keyframe's ``start_percent`` (``model_sigma`` timing, and
            the fallback when the host does not report the run's schedule).

    Example:
        >>> chain = KeyframeChain().then(Keyframe(0.5, 0.25))
        >>> s = StrengthSchedule(chain, "executed_steps", start_sigmas=(1e9, 2.0))
        >>> [s.at(sigma, [8.0, 4.0, 2.0, 1.0, 0.0]).strength for sigma in (8.0, 4.0, 2.0, 1.0)]
        [1.0, 1.0, 0.25, 0.25]
    """

    chain: KeyframeChain
    timing: WindowTiming = "executed_steps"
    start_sigmas: Tuple[float, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.timing not in WINDOW_TIMINGS:
            raise ValueError(f"timing {self.timing!r} is not one of {WINDOW_TIMINGS}")
        if len(self.start_sigmas) != len(self.chain.keyframes):
            raise ValueError(f"{len(self.start_sigmas)} start sigmas for {len(self.chain.keyframes)} keyframes")

    def steps(self, sample_sigmas: Sequence[float]) -> Tuple[StepControl, ...]:
        """The keyframe at each executed step of a run with schedule ``sample_sigmas`` (``N + 1`` values)."""
        return _steps(self, tuple(float(s) for s in sample_sigmas))

    def _walk(self, sigmas: Tuple[float, ...]) -> Tuple[StepControl, ...]:
        n = len(sigmas) - 1
        frames = self.chain.keyframes
        if self.timing == "executed_steps":
            reached = [[not (i / n < k.start_percent) for k in frames] for i in range(n)]
            before = [k.start_percent <= 0.0 for k in frames]
        else:
            reached = [[start >= sigmas[i] for start in self.start_sigmas] for i in range(n)]
            before = [start > max(sigmas) for start in self.start_sigmas]
        return resolve_keyframes(frames, reached, before)

    def at(self, sigma: float, sample_sigmas: Optional[Sequence[float]] = None) -> StepControl:
        """The keyframe acting at a model call at ``sigma``.

        Args:
            sigma: the call's sigma.
            sample_sigmas: the run's schedule, or None when the host does not report it: then the last
                keyframe whose start sigma is at or above ``sigma`` acts (no guarantee, no interpolation).
        """
        if sample_sigmas is not None and len(sample_sigmas) > 1:
            index = step_index(sigma, sample_sigmas)
            if index is not None:
                return self.steps(sample_sigmas)[index]
        reached = [[start >= sigma for start in self.start_sigmas]]
        return resolve_keyframes(self.chain.keyframes, reached, [True] * len(self.start_sigmas))[0]


@lru_cache(maxsize=16)
def _steps(schedule: StrengthSchedule, sigmas: Tuple[float, ...]) -> Tuple[StepControl, ...]:
    # Every model call of a run asks for the same walk: it is computed once per schedule and run.
    return schedule._walk(sigmas)
