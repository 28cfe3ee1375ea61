"""Recognising and building Z-Image Fun ControlNets from their weights: sizes and version from keys and shapes.

alibaba-pai's files keep the names of the authors' (and diffusers') modules, which the module uses as they are:
``control_all_x_embedder.2-1`` (64 inputs: v1's 16-channel context; 132: 2.x's 33), ``control_layers.*`` and
``control_noise_refiner.*`` (NextDiT blocks with ``attention.to_q/to_k/to_v/to_out.0/norm_q/norm_k``,
``feed_forward.w1/w2/w3``, four RMS norms, ``adaLN_modulation.0``; control blocks add ``after_proj``, the
first ``before_proj``). The versions differ in the count of control layers and in the refiner:

======== ============== ================================= =========
version  control layers refiner                           context
======== ============== ================================= =========
1.0      6              plain blocks (no ``after_proj``)  16
2.0      15             control blocks, all-zero weights  33
2.1      15             control blocks                    33
2.1-lite 3              control blocks                    33
======== ============== ================================= =========

2.0's refiner weights were released untrained: its refiner stage runs the control layers (as the authors'
code for 2.0 does); a warning says to use 2.1.
"""
from __future__ import annotations

import logging
from typing import Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from .model import PATCH, RefinerKind, ZImageControlNet, ZImageControlNetConfig, default_places

__all__ = ["EMBEDDER", "FORMATS", "build_z_image", "claims_z_image", "detect_z_image_config"]

LOG = logging.getLogger(__name__)

EMBEDDER = f"control_all_x_embedder.{PATCH}-1.weight"
"""The key every Z-Image Fun ControlNet has (ComfyUI's detection key)."""

LATENT_CHANNELS = 16
"""Channels of Z-Image's (the Flux VAE's) latent."""


def _shape(sd: Mapping[str, Tensor], key: str) -> Tuple[int, ...]:
    try:
        return tuple(sd[key].shape)
    except KeyError:
        raise ControlNetFormatError(f"incomplete Z-Image Fun ControlNet weights: missing {key}") from None


def _refiner_kind(sd: Mapping[str, Tensor], context: int, latent: int) -> RefinerKind:
    """The refiner stage from the refiner's keys (control blocks or plain ones) and, for 2.x, its values."""
    skips = "control_noise_refiner.0.after_proj.weight"
    if skips not in sd:
        if context != latent:
            raise ControlNetFormatError(
                f"the control embedder takes the {context}-channel context of 2.x but the refiner is v1's (no "
                "after_proj): the file mixes two Z-Image Fun releases")
        return "plain"
    if context == latent:
        raise ControlNetFormatError(
            f"the refiner has 2.x's skips but the control embedder takes v1's {latent}-channel context: the file "
            "mixes two Z-Image Fun releases")
    weight = sd[skips]
    if weight.device.type != "meta" and not bool(torch.count_nonzero(weight)):
        return "control_layers"
    return "control_noise_refiner"


def detect_z_image_config(state_dict: Mapping[str, Tensor], *, places: Optional[Sequence[int]] = None,
                          axes_dim: Optional[Sequence[int]] = None) -> ZImageControlNetConfig:
    """Read a Z-Image Fun ControlNet's architecture and version from its keys and shapes.

    Args:
        state_dict: the file's weights.
        places: main layer after each control layer; :func:`default_places` of the count when None.
        axes_dim: rotary channels per axis; Z-Image's ``(32, 48, 48)`` (scaled to other head widths) when None.

    Raises:
        ControlNetFormatError: a key is missing, the blocks are not numbered 0..n-1, or the parts belong to
            different releases.
    """
    keys = list(state_dict)
    hidden, packed = _shape(state_dict, EMBEDDER)
    layers = numbered_indices(keys, r"control_layers\.(\d+)\.")
    refiner = numbered_indices(keys, r"control_noise_refiner\.(\d+)\.")
    for name, found in (("control_layers", layers), ("control_noise_refiner", refiner)):
        if not found or found != list(range(len(found))):
            raise ControlNetFormatError(f"Z-Image Fun ControlNet weights with {name} {found}: expected 0..n-1")
    if packed % (PATCH * PATCH):
        raise ControlNetFormatError(f"the control embedder takes {packed} inputs, not a whole number of 2x2 patches")
    context = packed // (PATCH * PATCH)
    block = "control_layers.0."
    head = _shape(state_dict, block + "attention.norm_q.weight")[0]
    if head == 0 or hidden % head:
        raise ControlNetFormatError(f"a {head}-wide attention head does not divide the {hidden}-wide tokens")
    latent = LATENT_CHANNELS
    if context not in (latent, 2 * latent + 1):
        raise ControlNetFormatError(f"the control embedder takes a {context}-channel context; Z-Image Fun "
                                    f"ControlNets take {latent} (v1) or {2 * latent + 1} (2.x)")
    kind = _refiner_kind(state_dict, context, latent)
    if kind == "control_layers":
        LOG.warning("Z-Image Fun ControlNet 2.0 detected (control_noise_refiner.0.after_proj is all zeros): that "
                    "release shipped an untrained refiner, so its refiner stage runs the control layers as the "
                    "authors' 2.0 code does; results are weaker, use Z-Image-Turbo-Fun-Controlnet-Union-2.1")
    if axes_dim is None:
        side = head * 3 // 8 // 2 * 2
        axes_dim = (head - 2 * side, side, side)
    try:
        return ZImageControlNetConfig(
            hidden_size=hidden,
            num_heads=hidden // head,
            ffn_hidden=_shape(state_dict, block + "feed_forward.w1.weight")[0],
            adaln_dim=_shape(state_dict, block + "adaLN_modulation.0.weight")[1],
            places=tuple(places) if places is not None else default_places(len(layers)),
            refiner=kind,
            refiner_depth=len(refiner),
            hint_channels=context,
            in_channels=latent,
            axes_dim=tuple(axes_dim),
        )
    except ValueError as e:
        raise ControlNetFormatError(f"not a buildable Z-Image Fun ControlNet: {e}") from None


def claims_z_image(state_dict: Mapping[str, Tensor]) -> bool:
    """The control embedder's key (as ComfyUI's ModelPatchLoader detects these files)."""
    return EMBEDDER in state_dict


def build_z_image(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                  places: Optional[Sequence[int]] = None, axes_dim: Optional[Sequence[int]] = None,
                  **options) -> ZImageControlNet:
    """A :class:`ZImageControlNet` from alibaba-pai's weights (other options than these two are ignored)."""
    config = detect_z_image_config(state_dict, places=places, axes_dim=axes_dim)
    return assemble(lambda: ZImageControlNet(config), state_dict,
                    f"detected Z-Image Fun ControlNet {config.version} ({len(config.places)} control layers)",
                    dtype=dtype, device=device)


FORMATS: Tuple[ModelFormat, ...] = (
    ModelFormat("Z-Image Fun ControlNet (1.0, 2.0, 2.1, 2.1-lite)", claims_z_image, build_z_image),
)
