"""ControlNet Union weights (xinsir ControlNet++ for SDXL, ProMax): recognised, read, built."""
from __future__ import annotations

from dataclasses import fields
from typing import Mapping, Optional, Tuple

import torch
from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from ..controlnet.config import ControlNetConfig
from ..controlnet.convert import diffusers_to_original, is_diffusers_layout
from ..controlnet.format import detect_config
from .model import UNION_PREFIXES, UNION_TYPE_NAMES, UnionConfig, UnionControlNet

__all__ = ["FORMATS", "build", "claims"]

_REQUIRED = ("task_embedding", "transformer_layes.0.attn.in_proj_weight", "spatial_ch_projs.weight",
             "control_add_embedding.linear_1.weight")


def claims(state_dict: Mapping[str, Tensor]) -> bool:
    """True for ControlNet Union weights (any of its fusion tensors is present)."""
    return any(k.startswith(UNION_PREFIXES) for k in state_dict)


def _union_config(base: ControlNetConfig, fusion: Mapping[str, Tensor]) -> UnionConfig:
    missing = [k for k in _REQUIRED if k not in fusion]
    if missing:
        raise ControlNetFormatError(
            f"ControlNet Union weights are incomplete: the hint fusion lacks {missing}; re-download the file")
    n, width = fusion["task_embedding"].shape
    if n > len(UNION_TYPE_NAMES):
        raise ControlNetFormatError(
            f"task_embedding has {n} rows: a ControlNet Union with more control types than the "
            f"{len(UNION_TYPE_NAMES)} known ({', '.join(UNION_TYPE_NAMES)}) is not supported")
    mc = base.model_channels
    if width != mc or fusion["spatial_ch_projs.weight"].shape != (mc, mc):
        raise ControlNetFormatError(
            f"ControlNet Union fusion width {width} does not match the encoder's {mc} channels")
    code_width = fusion["control_add_embedding.linear_1.weight"].shape[1]
    if code_width % n:
        raise ControlNetFormatError(
            f"control_add_embedding takes {code_width} features, not a multiple of the {n} control types")
    layers = len(numbered_indices(fusion, r"transformer_layes\.(\d+)\."))
    kwargs = {f.name: getattr(base, f.name) for f in fields(base)}
    return UnionConfig(**kwargs, num_control_types=n, type_embed_dim=code_width // n, num_token_layers=layers)


def build(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
          global_pool: bool = False, **options) -> UnionControlNet:
    """Build a :class:`UnionControlNet` from Union weights (diffusers layout, or the original one).

    Args:
        state_dict: the weights, ``control_model.`` prefix already stripped.
        dtype: compute dtype; None keeps the stored one.
        device: where the parameters live; None keeps the tensors where they are.
        global_pool: average residuals over space.
        **options: accepted for the loader's sake; unused.

    Raises:
        ControlNetFormatError: incomplete or inconsistent weights.
    """
    fusion = {k: v for k, v in state_dict.items() if k.startswith(UNION_PREFIXES)}
    encoder = {k: v for k, v in state_dict.items() if k not in fusion}
    try:
        if is_diffusers_layout(encoder):
            encoder = diffusers_to_original(encoder)
        config = _union_config(detect_config(encoder, global_pool), fusion)
    except KeyError as e:
        raise ControlNetFormatError(f"ControlNet Union: {e.args[0]}") from None
    return assemble(lambda: UnionControlNet(config), {**encoder, **fusion},
                    f"detected {config.num_control_types}-type ControlNet Union", dtype=dtype, device=device)


FORMATS: Tuple[ModelFormat, ...] = (ModelFormat("ControlNet Union", claims, build),)
