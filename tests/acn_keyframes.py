"""ComfyUI-Advanced-ControlNet's keyframe rule, restated call by call as its documentation and source describe it.

ACN keeps state across model calls (``AdvancedControlBase.prepare_current_timestep``, adv_control/utils.py):
a call at the same ``t`` as the last one changes nothing; otherwise, once the current keyframe has been used
``guarantee_steps`` times (0 for a keyframe starting before the run), it walks forward through the keyframes
whose start has been reached, stopping after the first that guarantees steps, and counts one use. Strength
comes from the current keyframe; latent strengths are replaced, inherited or dropped along the walk. This
restatement is the tests' oracle; the pack resolves the same walk per executed step instead.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

BIG_SIGMA = 999999999.9  # ComfyUI's percent_to_sigma(0)


@dataclass
class AcnKeyframe:
    start_percent: float
    strength: float = 1.0
    guarantee_steps: int = 1
    inherit_missing: bool = True
    latents: Optional[str] = None  # an opaque label standing for a latent keyframe group


def acn_group(keyframes: Sequence[AcnKeyframe]) -> List[AcnKeyframe]:
    """The chain as ACN stores it: its default keyframe first, then a stable sort by start_percent."""
    group = [AcnKeyframe(0.0, 1.0, 0)]
    for k in keyframes:
        group = sorted(group + [k], key=lambda f: f.start_percent)
    return group


@dataclass
class AcnWalker:
    """ACN's per-call state machine over one run."""

    group: List[AcnKeyframe]
    reached: Callable[[AcnKeyframe, float], bool]
    starts_before_run: Callable[[AcnKeyframe], bool]
    current: int = -1
    used: int = 0
    latents: Optional[str] = None
    prev_t: Optional[float] = None
    log: List[Tuple[float, Optional[str]]] = field(default_factory=list)

    def guarantee(self, k: AcnKeyframe) -> int:
        return 0 if self.starts_before_run(k) else k.guarantee_steps

    def call(self, t: float) -> Tuple[float, Optional[str]]:
        if t != self.prev_t:
            if self.current < 0 or self.used >= self.guarantee(self.group[self.current]):
                for i in range(self.current + 1, len(self.group)):
                    k = self.group[i]
                    if not self.reached(k, t):
                        break
                    self.current, self.used = i, 0
                    if k.latents is not None:
                        self.latents = k.latents
                    elif not k.inherit_missing:
                        self.latents = None
                    if self.guarantee(k) > 0:
                        break
            self.prev_t = t
            self.used += 1
        return self.group[self.current].strength, self.latents


def acn_sigma_run(keyframes: Sequence[AcnKeyframe], sigmas: Sequence[float],
                  percent_to_sigma: Callable[[float], float]) -> List[Tuple[float, Optional[str]]]:
    """ACN on a run: one call per executed step at its schedule sigma (ACN's ``start_t >= t``)."""
    def start_t(k):
        return BIG_SIGMA if k.start_percent <= 0.0 else percent_to_sigma(k.start_percent)
    walker = AcnWalker(acn_group(keyframes), lambda k, t: start_t(k) >= t, lambda k: start_t(k) > max(sigmas))
    return [walker.call(s) for s in sigmas[:-1]]


def acn_step_run(keyframes: Sequence[AcnKeyframe], steps: int) -> List[Tuple[float, Optional[str]]]:
    """The same walk in executed-step timing: keyframe reached at step i when i / N >= start_percent."""
    walker = AcnWalker(acn_group(keyframes), lambda k, i: not (i / steps < k.start_percent),
                       lambda k: k.start_percent <= 0.0)
    return [walker.call(i) for i in range(steps)]
