"""``load_controlnet``: any supported file or state dict in, a ready control model out.

The family comes from an ordered table of formats, :data:`FORMATS`: each entry claims weights
from their keys and shapes (never a file name) and builds its module. Entries are tried in order,
specific before broad; refusals (weights that are recognised but not control models this core
runs) are entries too, so their messages say what was found.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from ..errors import ControlNetFormatError
from ..families.control_lora import format as control_lora
from ..families.controlnet import format as controlnet
from ..families.controlnet.convert import strip_original_prefix
from ..families.controlnet.format import detect_config
from ..families.flux import format as flux
from ..families.qwen_image import format as qwen_image
from ..families.sd3 import format as sd3
from ..families.t2i_adapter import format as t2i_adapter
from ..families.union import format as union
from ..families.z_image import format as z_image
from ..families.control_lora.model import ControlLora
from ..family import ControlModel, ModelFormat
from .files import read_state_dict
from .refusals import BROAD_REFUSALS, REFUSALS

__all__ = ["FORMATS", "ControlNetFormatError", "LoadedModel", "ModelFormat", "describe_weights", "detect_config",
           "detect_format", "load_controlnet"]


def describe_weights(state_dict: Mapping[str, Tensor], limit: int = 3) -> str:
    """A short account of unknown weights for error messages: key count, first keys and shapes.

    Example:
        >>> print(describe_weights({"a.weight": torch.zeros(2, 3), "b": torch.zeros(1)}))
        2 tensors, e.g. a.weight (2, 3), b (1,)
    """
    keys = sorted(state_dict)
    sample = ", ".join(f"{k} {tuple(state_dict[k].shape)}" for k in keys[:limit])
    return f"{len(keys)} tensors, e.g. {sample}"


LoadedModel = Union[ControlModel, ControlLora]
"""What :func:`load_controlnet` returns: a family's module, or a Control-LoRA awaiting its base UNet (its
``family`` says which; callers dispatch on it, never on the class)."""

FORMATS: Tuple[ModelFormat, ...] = (
    # Refusals first: ControlNet-XS files also carry a hint embedding.
    *(ModelFormat(r.name, r.claims, r.build) for r in REFUSALS),
    *control_lora.FORMATS,
    *sd3.FORMATS,
    # Flux before the classic ControlNet: XLabs files share its hint-block key.
    *flux.FORMATS,
    *qwen_image.FORMATS,
    *z_image.FORMATS,
    # Union files are diffusers ControlNets plus the fusion block: before the classic ControlNet.
    *union.FORMATS,
    *controlnet.FORMATS,
    *t2i_adapter.FORMATS,
    # Last: checkpoints, UNets, transformers, VAEs and text encoders share key prefixes with control models.
    *(ModelFormat(r.name, r.claims, r.build) for r in BROAD_REFUSALS),
)
"""The only list of families: the first row that claims a state dict builds it."""


def detect_format(state_dict: Mapping[str, Tensor]) -> ModelFormat:
    """The first entry of :data:`FORMATS` that claims ``state_dict``.

    Raises:
        ControlNetFormatError: no entry claims it; the message says what the weights look like.
    """
    for entry in FORMATS:
        if entry.claims(state_dict):
            return entry
    raise ControlNetFormatError(
        f"unknown weights ({describe_weights(state_dict)}): no hint embedding (input_hint_block / "
        "controlnet_cond_embedding), so this is not a ControlNet this pack can load")


def _build(state_dict: Mapping[str, Tensor], where: str, **options) -> nn.Module:
    """The claiming format's module; every way the weights fail to fit is a ControlNetFormatError."""
    try:
        return detect_format(state_dict).build(state_dict, **options)
    except ControlNetFormatError as e:
        raise ControlNetFormatError(f"{where}: {e.args[0]}") from None
    except (KeyError, IndexError, ValueError, TypeError, StopIteration, RuntimeError) as e:
        detail = e.args[0] if e.args else type(e).__name__
        raise ControlNetFormatError(f"{where}: the weights' keys or shapes fit no model this loader knows ({detail}); "
                                    "the file is damaged or of an unsupported kind") from None


def _refuse_early(state_dict: Mapping[str, Tensor], where: str, options: dict) -> None:
    """Refuse a file from its keys and shapes (meta tensors), before its gigabytes are read.

    Catches a full checkpoint, a LoRA, unknown weights or tensors of the wrong shape without
    converting anything.
    """
    state_dict = strip_original_prefix(state_dict)
    try:
        detect_format(state_dict).build(state_dict, **options)
    except ControlNetFormatError as e:
        raise ControlNetFormatError(f"{where}: {e.args[0]}") from None
    except Exception:
        # A builder that needs tensor values cannot run on meta tensors: the real weights decide.
        return


def load_controlnet(
    source: Union[str, os.PathLike, Mapping[str, Tensor]],
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
    *,
    base_unet: Optional[Mapping[str, Tensor]] = None,
    **options,
) -> LoadedModel:
    """Load a control model from a file or a state dict; the family comes from :data:`FORMATS`.

    The module is built on the meta device and takes the loaded tensors as its parameters, so
    no random initialisation is thrown away and each weight is cast once.

    Args:
        source: path to ``.safetensors`` (preferred) or ``.pth/.pt/.ckpt/.bin``, or a state dict.
        dtype: compute dtype of the parameters; None keeps the stored dtype.
        device: where the parameters live; None keeps the CPU.
        base_unet: the base model's UNet weights (original layout, as ComfyUI's
            ``model.diffusion_model.state_dict()``, or diffusers'), which a Control-LoRA is merged
            with; other families ignore them.
        **options: passed to the family's builder. ControlNets take ``global_pool`` (average
            residuals over space, for shuffle-style models), ``config`` (skip detection) and
            config fields replacing detected ones (e.g. ``num_heads`` for unusual widths).

    Returns:
        The family's module (e.g. a :class:`ControlNet`) in eval mode; for a Control-LoRA given no
        ``base_unet``, the :class:`~.control_lora.ControlLora` to merge later.

    Raises:
        FileNotFoundError, WeightFileError: the file is missing, truncated, corrupt or unsafe.
        ControlNetFormatError: the weights are not a supported control model.

    Example:
        >>> net = load_controlnet("control_v11p_sd15_canny.safetensors", dtype=torch.float16)  # doctest: +SKIP
    """
    if isinstance(source, Mapping):
        state_dict = {k: v if dtype is None or not v.is_floating_point() else v.to(dtype) for k, v in source.items()}
        where = "state dict"
    else:
        where = os.fspath(source)
        state_dict = read_state_dict(where, dtype,
                                     inspect=lambda sd: _refuse_early(sd, where, dict(options, base_unet=base_unet)))
    return _build(strip_original_prefix(state_dict), where, dtype=dtype, device=device, base_unet=base_unet, **options)
