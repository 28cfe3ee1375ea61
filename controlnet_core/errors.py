"""Errors the core raises about weights, shared by the loader and every model family."""
from __future__ import annotations

__all__ = ["ControlNetFormatError"]


class ControlNetFormatError(ValueError):
    """The weights are not a control model this core can build."""
