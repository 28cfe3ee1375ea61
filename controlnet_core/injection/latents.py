"""Per-latent strengths: one multiplier per batch index, for batches of variations (ACN's latent keyframes).

Written as ``"0:1.0, 1-3:0.5"`` (index or inclusive range, colon, strength; a negative index counts from
the end of the batch) or as a plain list ``"1.0, 0.5, 0.5"`` (strength of latent 0, 1, 2, ...). As in
ComfyUI-Advanced-ControlNet, latents the strengths do not list get the acting keyframe's
``null_latent_strength`` (0 unless a keyframe says otherwise) and indices outside the batch are ignored.
ACN writes the same strengths as ``"0=1.0, 1:4=0.5"`` (Python slice ranges).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Tuple

__all__ = ["LatentStrengths", "parse_latent_strengths"]

_ENTRY = re.compile(r"^(-?\d+)(?:\s*-\s*(\d+))?\s*:\s*(\S+)$")


@dataclass(frozen=True)
class LatentStrengths:
    """Strength per batch index.

    Attributes:
        entries: ``(batch_index, strength)`` pairs; a later pair for the same index wins.

    Example:
        >>> parse_latent_strengths("0:1.0, 2-3:0.5").factors(5, null_strength=0.0)
        (1.0, 0.0, 0.5, 0.5, 0.0)
    """

    entries: Tuple[Tuple[int, float], ...]

    def __post_init__(self) -> None:
        for index, strength in self.entries:
            if not (math.isfinite(strength) and strength >= 0.0):
                raise ValueError(f"strength {strength} of latent {index} must be a finite number >= 0")

    def factors(self, latent_count: int, null_strength: float = 0.0) -> Tuple[float, ...]:
        """One multiplier per latent of a batch of ``latent_count``."""
        out = [float(null_strength)] * latent_count
        for index, strength in self.entries:
            real = index + latent_count if index < 0 else index
            if 0 <= real < latent_count:
                out[real] = float(strength)
        return tuple(out)


def parse_latent_strengths(text: str) -> LatentStrengths:
    """Read ``"0:1.0, 1-3:0.5"`` or ``"1.0, 0.5, 0.5"``; raises ValueError naming the bad entry."""
    items = [item.strip() for item in text.replace("\n", ",").split(",") if item.strip()]
    if not items:
        raise ValueError("no latent strengths given")
    if all(":" not in item for item in items):
        return LatentStrengths(tuple((i, _strength(item, item)) for i, item in enumerate(items)))
    entries = []
    for item in items:
        found = _ENTRY.match(item)
        if found is None:
            raise ValueError(f"'{item}' is not 'index:strength' or 'first-last:strength' (e.g. '0:1.0, 1-3:0.5'); "
                             "do not mix it with plain strengths")
        first, last, value = int(found[1]), found[2], _strength(found[3], item)
        stop = first if last is None else int(last)
        if stop < first:
            raise ValueError(f"'{item}': the range must run from the smaller index to the larger")
        entries += [(i, value) for i in range(first, stop + 1)]
    return LatentStrengths(tuple(entries))


def _strength(text: str, item: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"'{item}': '{text}' is not a number") from None
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"'{item}': strength must be a finite number >= 0")
    return value
