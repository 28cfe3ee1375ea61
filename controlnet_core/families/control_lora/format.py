"""Control-LoRA weights (Stability): recognised, and read into the low-rank ControlNet awaiting its base UNet."""
from __future__ import annotations

from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from ...family import ModelFormat
from .model import MARKER, ControlLora

__all__ = ["FORMATS", "build", "claims"]


def claims(state_dict: Mapping[str, Tensor]) -> bool:
    """True for Control-LoRA weights (the ``lora_controlnet`` marker key)."""
    return MARKER in state_dict


def build(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
          base_unet: Optional[Mapping[str, Tensor]] = None, **options):
    """A ready :class:`ControlNet` when ``base_unet`` is given, else the :class:`ControlLora` awaiting it.

    Args:
        state_dict: the Control-LoRA weights.
        dtype: compute dtype of the merged ControlNet (see :meth:`ControlLora.merge`).
        device: where the merged ControlNet lives.
        base_unet: the base model's UNet weights, original or diffusers layout.
        **options: accepted for the loader's sake; unused.

    Raises:
        ControlNetFormatError: see :meth:`ControlLora.from_state_dict` and :meth:`ControlLora.merge`.
    """
    lora = ControlLora.from_state_dict(state_dict)
    if base_unet is None:
        return lora
    return lora.merge(base_unet, dtype=dtype, device=device)


FORMATS: Tuple[ModelFormat, ...] = (ModelFormat("Control-LoRA", claims, build),)
