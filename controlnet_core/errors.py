"""Errors the core raises about weights, shared by the loader and every model family."""
from __future__ import annotations

__all__ = ["ControlNetFormatError", "ControlNetInputError"]


class ControlNetFormatError(ValueError):
    """The weights are not a control model this core can build."""


class ControlNetInputError(ValueError):
    """An input to a control model's forward does not fit the model (hint size, batch, widths)."""
