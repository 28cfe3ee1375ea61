"""T2I-Adapter files: which weights are adapters, their key layouts, and the module built from them.

Reads TencentARC's original layout (full, light and SDXL; ``conv_in`` / ``body.*``) and diffusers'
``adapter.*`` layout; every size comes from the shapes.
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from .model import HINT_CHANNELS, LATENT_SCALE, T2IAdapter, T2IAdapterConfig

__all__ = ["build", "claims", "detect_t2i_config", "t2i_state_dict"]


def _strip_prefix(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    if state_dict and all(k.startswith("adapter.") for k in state_dict):
        return {k[len("adapter."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def claims(state_dict: Mapping[str, Tensor]) -> bool:
    """True for a T2I-Adapter in any supported layout (keys only)."""
    sd = _strip_prefix(state_dict)
    if not sd or not all(k.startswith(("conv_in.", "body.")) for k in sd):
        return False
    return "conv_in.weight" in sd or "body.0.out_conv.weight" in sd


def _original_res_per_level(keys: Sequence[str]) -> int:
    # A level's first block carries its channel change or downsampling; without either anywhere,
    # two blocks per level, as ComfyUI assumes for every original file.
    firsts = {int(m.group(1)) for k in keys if (m := re.match(r"body\.(\d+)\.(in_conv|down_opt)\.", k))}
    return min(firsts - {0}, default=2)


def t2i_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Any supported layout renamed to this module's (diffusers' names, no ``adapter.`` prefix).

    Raises:
        ControlNetFormatError: a key has no place in a T2I-Adapter.
    """
    sd = _strip_prefix(state_dict)
    if "body.0.out_conv.weight" in sd:
        return {re.sub(r"^body\.(\d+)\.body\.", r"body.\1.resnets.", k): v for k, v in sd.items()}
    if any(re.match(r"body\.\d+\.resnets\.", k) for k in sd):
        return sd
    per_level = _original_res_per_level(list(sd))
    out = {}
    for key, value in sd.items():
        m = re.match(r"body\.(\d+)\.(.+)$", key)
        if m is None:
            out[key] = value
            continue
        level, j = divmod(int(m.group(1)), per_level)
        rest = m.group(2)
        if rest.startswith(("block1.", "block2.")):
            out[f"body.{level}.resnets.{j}.{rest}"] = value
        elif j == 0 and rest.startswith("in_conv."):
            out[f"body.{level}.{rest}"] = value
        elif j == 0 and rest.startswith("down_opt.op."):
            out[f"body.{level}.down_conv.{rest[len('down_opt.op.'):]}"] = value
        else:
            raise ControlNetFormatError(
                f"T2I-Adapter key {key!r} fits no level of {per_level} residual blocks "
                "(skip convolutions of unreleased variants are not supported)")
    return out


def _hint_layout(unshuffled: int, light: bool) -> Tuple[int, int]:
    for factor in (LATENT_SCALE, 2 * LATENT_SCALE):
        for channels in HINT_CHANNELS:
            if channels * factor ** 2 == unshuffled and not (light and factor != LATENT_SCALE):
                return channels, factor
    factors = f"{LATENT_SCALE} (SD1.x)" if light else f"{LATENT_SCALE} (SD1.x) or {2 * LATENT_SCALE} (SDXL)"
    raise ControlNetFormatError(f"the adapter's first convolution reads {unshuffled} channels: no RGB or gray "
                                f"hint unshuffled by {factors}")


def detect_t2i_config(state_dict: Mapping[str, Tensor]) -> T2IAdapterConfig:
    """Read the architecture from weights in this module's layout (see :func:`t2i_state_dict`)."""
    light = "body.0.out_conv.weight" in state_dict
    levels = numbered_indices(state_dict, r"body\.(\d+)\.")
    if not levels or levels != list(range(len(levels))):
        raise ControlNetFormatError(f"T2I-Adapter levels must be numbered 0..n-1; found {levels}")
    per_level = len(numbered_indices(state_dict, r"body\.0\.resnets\.(\d+)\."))
    try:
        if light:
            hint_channels, unshuffle = _hint_layout(state_dict["body.0.in_conv.weight"].shape[1], light)
            return T2IAdapterConfig(
                "light", tuple(state_dict[f"body.{i}.out_conv.weight"].shape[0] for i in levels), per_level,
                hint_channels, unshuffle, 3, False,
                tuple(state_dict[f"body.{i}.in_conv.weight"].shape[0] for i in levels))
        hint_channels, unshuffle = _hint_layout(state_dict["conv_in.weight"].shape[1], light)
        channels = tuple(state_dict[f"body.{i}.resnets.0.block1.weight"].shape[0] for i in levels)
        kind = "full_xl" if unshuffle > LATENT_SCALE else "full"
        return T2IAdapterConfig(kind, channels, per_level, hint_channels, unshuffle,
                                state_dict["body.0.resnets.0.block2.weight"].shape[-1],
                                any(".down_conv." in k for k in state_dict))
    except KeyError as e:
        raise ControlNetFormatError(f"incomplete T2I-Adapter weights: missing {e.args[0]}") from None
    except ValueError as e:
        raise ControlNetFormatError(f"T2I-Adapter weights of an unsupported shape: {e}") from None


def build(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
          **options) -> T2IAdapter:
    """A ready :class:`T2IAdapter` from weights in any supported layout.

    Built on the meta device; the given tensors become its parameters (cast once to ``dtype``).

    Args:
        state_dict: the weights, ``control_model.`` prefix already stripped.
        dtype: compute dtype; None keeps the stored one.
        device: where the parameters live; None keeps theirs.
        **options: options of other families; adapters have none.

    Raises:
        ControlNetFormatError: the weights do not make a T2I-Adapter.
    """
    sd = t2i_state_dict(state_dict)
    config = detect_t2i_config(sd)
    what = f"detected {config.kind} T2I-Adapter ({len(config.channels)} levels of {config.num_res_blocks} blocks)"
    return assemble(lambda: T2IAdapter(config), sd, what, dtype=dtype, device=device)


FORMATS: Tuple[ModelFormat, ...] = (ModelFormat("t2i_adapter", claims, build),)
