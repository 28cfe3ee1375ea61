"""``load_controlnet``: any supported file or state dict in, a ready :class:`ControlNet` out."""
from __future__ import annotations

import os
import re
from dataclasses import replace
from typing import Mapping, Optional, Union

import torch
from torch import Tensor

from .config import ControlNetConfig
from .convert import _level_layout_from_original, diffusers_to_original, is_diffusers_layout, strip_original_prefix
from .files import read_state_dict
from .model import ControlNet

__all__ = ["ControlNetFormatError", "detect_config", "load_controlnet"]

_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


class ControlNetFormatError(ValueError):
    """The weights are not a ControlNet this core can build."""


def _reject_non_controlnet(keys) -> None:
    if any(k.startswith(("model.diffusion_model.", "output_blocks.", "up_blocks.", "out.", "first_stage_model.",
                         "cond_stage_model.", "conditioner.")) for k in keys):
        raise ControlNetFormatError(
            "these weights are a UNet or a full checkpoint (they have decoder/output blocks), not a "
            "ControlNet; load it with a checkpoint loader and pick a ControlNet file here")
    if any("lora" in k for k in keys):
        if "lora_controlnet" in keys or any(k.startswith("input_hint_block.") for k in keys):
            raise ControlNetFormatError("Control-LoRA weights are not supported; use a full ControlNet file")
        raise ControlNetFormatError(
            "these are LoRA weights (low-rank updates for a model), not a ControlNet; load them with a LoRA "
            "loader and pick a ControlNet file here")
    if not any(k.startswith("input_hint_block.") for k in keys):
        sample = sorted(keys)[:3]
        raise ControlNetFormatError(
            f"unknown weights: no hint embedding (input_hint_block / controlnet_cond_embedding) among "
            f"{len(keys)} keys, e.g. {sample}; this is not a ControlNet (T2I-Adapters are not supported)")


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
    _reject_non_controlnet(keys)
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
    middle = _count(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\.") if "middle_block.2.in_layers.0.weight" in state_dict else -1
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


def _architecture(state_dict: Mapping[str, Tensor], where: str, global_pool: bool, config: Optional[ControlNetConfig],
                  overrides: dict):
    """Original-layout weights and their config; any parsing failure becomes a ControlNetFormatError."""
    state_dict = strip_original_prefix(state_dict)
    try:
        if is_diffusers_layout(state_dict):
            state_dict = diffusers_to_original(state_dict)
        config = config or detect_config(state_dict, global_pool)
        return state_dict, replace(config, **overrides) if overrides else config
    except ControlNetFormatError as e:
        raise ControlNetFormatError(f"{where}: {e.args[0]}") from None
    except (KeyError, IndexError, ValueError, TypeError, StopIteration, RuntimeError) as e:
        detail = e.args[0] if e.args else type(e).__name__
        raise ControlNetFormatError(f"{where}: the keys look like a ControlNet, but their shapes fit no architecture "
                                    f"this loader knows ({detail}); the file is damaged or of an unsupported "
                                    "kind") from None


def _check_fit(state_dict: Mapping[str, Tensor], config: ControlNetConfig, where: str) -> ControlNet:
    """A ControlNet on the meta device, after checking ``state_dict`` has exactly its keys and shapes."""
    try:
        with torch.device("meta"):
            net = ControlNet(config)
    except (ValueError, RuntimeError, TypeError, ZeroDivisionError) as e:
        raise ControlNetFormatError(f"{where}: the detected {config.family} architecture cannot be built ({e}); "
                                    "the file is damaged or of an unsupported kind") from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ControlNetFormatError(
            f"{where}: weights do not fit the detected {config.family} architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unknown (e.g. {unexpected[:3]})")
    wrong = [k for k, shape in expected.items() if tuple(state_dict[k].shape) != shape]
    if wrong:
        k = wrong[0]
        raise ControlNetFormatError(
            f"{where}: {len(wrong)} tensors have the wrong shape for the detected {config.family} architecture, "
            f"e.g. {k} is {list(state_dict[k].shape)} where {list(expected[k])} belongs; the file is damaged or "
            "mixes two models")
    return net


def load_controlnet(
    source: Union[str, os.PathLike, Mapping[str, Tensor]],
    dtype: Optional[torch.dtype] = None,
    device: Optional[Union[str, torch.device]] = None,
    *,
    global_pool: bool = False,
    config: Optional[ControlNetConfig] = None,
    **config_overrides,
) -> ControlNet:
    """Load a ControlNet from a file or a state dict, in either key layout.

    The format (original ``control_model.*`` / bare ``input_blocks.*``, or diffusers) and the
    architecture (SD1.x, SD2.x, SDXL and its smaller variants) come from the keys and shapes.
    The module is built on the meta device and takes the loaded tensors as its parameters, so
    no random initialisation is thrown away and each weight is cast once.

    Args:
        source: path to ``.safetensors`` (preferred) or ``.pth/.pt/.ckpt/.bin``, or a state dict.
        dtype: compute dtype of the parameters; None keeps the stored dtype.
        device: where the parameters live; None keeps the CPU.
        global_pool: average residuals over space (shuffle-style models).
        config: the architecture, to skip detection.
        **config_overrides: fields replacing detected ones (e.g. ``num_heads`` for unusual widths).

    Returns:
        A :class:`ControlNet` in eval mode.

    Raises:
        FileNotFoundError, WeightFileError: the file is missing, truncated, corrupt or unsafe.
        ControlNetFormatError: the weights are not a supported ControlNet.

    Example:
        >>> net = load_controlnet("control_v11p_sd15_canny.safetensors", dtype=torch.float16)  # doctest: +SKIP
    """
    checked = []  # the meta module built while the file's keys and shapes were checked
    if isinstance(source, Mapping):
        state_dict = {k: v if dtype is None or not v.is_floating_point() else v.to(dtype) for k, v in source.items()}
        where = "state dict"
    else:
        where = os.fspath(source)
        # Keys and shapes are checked before any tensor data is read: a full checkpoint or another
        # architecture is refused without converting gigabytes first.
        state_dict = read_state_dict(where, dtype, inspect=lambda sd: checked.append(_check_fit(
            *_architecture(sd, where, global_pool, config, config_overrides), where)))
    state_dict, config = _architecture(state_dict, where, global_pool, config, config_overrides)
    net = checked[0] if checked else _check_fit(state_dict, config, where)
    net.load_state_dict(state_dict, strict=True, assign=True)
    if device is not None:
        net.to(device)
    return net.eval().requires_grad_(False)
