"""``load_controlnet``: any supported file or state dict in, a ready control model out.

The family comes from an ordered table of formats, :data:`FORMATS`: each entry claims weights
from their keys and shapes (never a file name) and builds its module. Entries are tried in order,
specific before broad; refusals (weights that are recognised but not control models this core
runs) are entries too, so their messages say what was found.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from . import control_lora, t2i_adapter, union
from .config import ControlNetConfig
from .convert import _level_layout_from_original, diffusers_to_original, is_diffusers_layout, strip_original_prefix
from .errors import ControlNetFormatError
from .files import read_state_dict
from .flux_loading import (build_flux_diffusers, build_flux_mistoline, build_flux_xlabs, claims_flux_diffusers,
                           claims_flux_mistoline, claims_flux_xlabs)
from .model import ControlNet
from .refusals import BROAD_REFUSALS, REFUSALS
from .sd3_format import build_instantx, build_sd35, claims_instantx, claims_sd35

__all__ = ["FORMATS", "ControlNetFormatError", "ModelFormat", "check_fits", "describe_weights", "detect_config",
           "detect_format", "load_controlnet"]

_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


@dataclass(frozen=True)
class ModelFormat:
    """One entry of the format table.

    Attributes:
        name: what the weights are, for messages (e.g. ``"controlnet"``).
        claims: ``state_dict -> bool`` from keys and shapes alone.
        build: ``(state_dict, *, dtype, device, **options) -> nn.Module``; raises
            :class:`ControlNetFormatError` for weights it recognises but refuses.
    """

    name: str
    claims: Callable[[Mapping[str, Tensor]], bool]
    build: Callable[..., nn.Module]


def describe_weights(state_dict: Mapping[str, Tensor], limit: int = 3) -> str:
    """A short account of unknown weights for error messages: key count, first keys and shapes.

    Example:
        >>> print(describe_weights({"a.weight": torch.zeros(2, 3), "b": torch.zeros(1)}))
        2 tensors, e.g. a.weight (2, 3), b (1,)
    """
    keys = sorted(state_dict)
    sample = ", ".join(f"{k} {tuple(state_dict[k].shape)}" for k in keys[:limit])
    return f"{len(keys)} tensors, e.g. {sample}"


def _is_classic_controlnet(state_dict: Mapping[str, Tensor]) -> bool:
    return any(k.startswith(("input_hint_block.", "controlnet_cond_embedding.")) for k in state_dict)


def _build_classic_controlnet(state_dict: Mapping[str, Tensor], *, dtype=None, device=None, global_pool: bool = False,
                              config: Optional[ControlNetConfig] = None, base_unet=None,
                              **config_overrides) -> ControlNet:
    # base_unet is ignored: a classic ControlNet file carries every weight itself.
    if is_diffusers_layout(state_dict):
        state_dict = diffusers_to_original(state_dict)
    config = config or detect_config(state_dict, global_pool)
    if config_overrides:
        config = replace(config, **config_overrides)
    with torch.device("meta"):
        net = ControlNet(config)
    check_fits(net, state_dict, f"detected {config.family}")
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net


def check_fits(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    """Raise :class:`ControlNetFormatError` unless ``state_dict`` has exactly ``module``'s keys and shapes.

    Args:
        module: the module built for the weights (on the meta device is enough).
        state_dict: the weights, in the module's key layout.
        what: the architecture, for the message (e.g. ``"detected sd1"``).
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ControlNetFormatError(
            f"weights do not fit the {what} architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unknown (e.g. {unexpected[:3]})")
    wrong = [k for k, shape in expected.items() if tuple(state_dict[k].shape) != shape]
    if wrong:
        raise ControlNetFormatError(
            f"{len(wrong)} tensors have the wrong shape for the {what} architecture, e.g. {wrong[0]} is "
            f"{list(state_dict[wrong[0]].shape)} where {list(expected[wrong[0]])} belongs; the file is damaged or "
            "mixes two models")


FORMATS: Tuple[ModelFormat, ...] = (
    # Refusals first: ControlNet-XS files also carry a hint embedding.
    *(ModelFormat(r.name, r.claims, r.build) for r in REFUSALS),
    ModelFormat("Control-LoRA", control_lora.claims, control_lora.build),
    ModelFormat("SD3 ControlNet (InstantX)", claims_instantx, build_instantx),
    ModelFormat("SD3.5 ControlNet (Stability)", claims_sd35, build_sd35),
    ModelFormat("Flux ControlNet (Mistoline)", claims_flux_mistoline, build_flux_mistoline),
    # XLabs files share the classic ControlNet's hint-block key, so they come before it.
    ModelFormat("Flux ControlNet (XLabs)", claims_flux_xlabs, build_flux_xlabs),
    ModelFormat("Flux ControlNet (diffusers: InstantX, Shakker-Labs)", claims_flux_diffusers, build_flux_diffusers),
    # Union files are diffusers ControlNets plus the fusion block: before the classic ControlNet.
    ModelFormat("ControlNet Union", union.claims, union.build),
    ModelFormat("controlnet", _is_classic_controlnet, _build_classic_controlnet),
    ModelFormat("t2i_adapter", t2i_adapter.claims, t2i_adapter.build),
    # Last: checkpoints, UNets, transformers, VAEs and text encoders share key prefixes with control models.
    *(ModelFormat(r.name, r.claims, r.build) for r in BROAD_REFUSALS),
)


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


def _count(keys, pattern: str) -> int:
    return len({m.group(1) for k in keys if (m := re.match(pattern, k))})


def detect_config(state_dict: Mapping[str, Tensor], global_pool: bool = False) -> ControlNetConfig:
    """Read the architecture from original-layout keys and shapes (never from a file name).

    Args:
        state_dict: weights in the original layout, prefix stripped.
        global_pool: average residuals over space (shuffle models; not visible in the weights).

    Returns:
        The detected :class:`ControlNetConfig`. Attention heads follow the family: 8 heads for a
        768-wide context (SD1.x), 64 channels per head for SD2.x and SDXL; other widths take 8 heads
        with convolution projections and 64-channel heads with linear ones.
    """
    keys = list(state_dict)
    try:
        conv_in = state_dict["input_blocks.0.0.weight"]
        hint_in = state_dict["input_hint_block.0.weight"]
    except KeyError as e:
        raise ControlNetFormatError(f"incomplete ControlNet weights: missing {e.args[0]}") from None
    mc = conv_in.shape[0]
    res_per_level = _level_layout_from_original(keys)
    channel_mult, depths, block = [], [], 1
    for n_res in res_per_level:
        mult = 1
        for _ in range(n_res):
            mult = state_dict[f"input_blocks.{block}.0.out_layers.3.weight"].shape[0] // mc
            depths.append(_count(keys, rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\."))
            block += 1
        channel_mult.append(mult)
        block += 1
    k_proj = next((v for k, v in state_dict.items() if k.endswith("attn2.to_k.weight")), None)
    if k_proj is None:
        raise ControlNetFormatError("no cross-attention found: not a Stable Diffusion ControlNet")
    context_dim = k_proj.shape[1]
    label = state_dict.get("label_emb.0.0.weight")
    # Of the Stable Diffusion families only SDXL conditions on a y vector (label_emb).
    family = "sdxl" if label is not None else _FAMILIES.get(context_dim, "custom")
    proj_in = next(v for k, v in state_dict.items() if k.endswith("proj_in.weight"))
    use_linear = proj_in.ndim == 2
    # SD1.x fixes the head count, SD2.x/SDXL the head width; other widths follow the projection style.
    fixed_heads = family == "sd1" or (family == "custom" and not use_linear)
    middle = -1
    if "middle_block.2.in_layers.0.weight" in state_dict:
        middle = _count(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\.")
    hint_blocks = sorted(int(m.group(1)) for k in keys if (m := re.match(r"input_hint_block\.(\d+)\.weight", k)))
    hint_channels = tuple(state_dict[f"input_hint_block.{i}.weight"].shape[0] for i in hint_blocks[:-1:2])
    return ControlNetConfig(
        model_channels=mc,
        channel_mult=tuple(channel_mult),
        num_res_blocks=tuple(res_per_level),
        transformer_depth=tuple(depths),
        transformer_depth_middle=middle,
        context_dim=context_dim,
        num_heads=8 if fixed_heads else -1,
        num_head_channels=-1 if fixed_heads else 64,
        use_linear_in_transformer=use_linear,
        adm_in_channels=None if label is None else label.shape[1],
        in_channels=conv_in.shape[1],
        hint_channels=hint_in.shape[1],
        hint_block_channels=hint_channels,
        global_pool=global_pool,
        family=family,
    )


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
) -> Union[nn.Module, control_lora.ControlLora]:
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
    net = _build(strip_original_prefix(state_dict), where, dtype=dtype, device=device, base_unet=base_unet, **options)
    if not isinstance(net, nn.Module):
        return net
    if device is not None:
        net.to(device)
    return net.eval().requires_grad_(False)
