"""Errors shared by the loaders of every control-model family."""
from __future__ import annotations

__all__ = ["ControlNetFormatError"]


class ControlNetFormatError(ValueError):
    """The weights are not a control model this core can build."""
