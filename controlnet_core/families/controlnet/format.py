"""Classic ControlNet weights (SD1.x, SD2.x, SDXL; original or diffusers layout): recognised, read, built."""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping, Optional, Tuple

from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from .config import ControlNetConfig
from .convert import _level_layout_from_original, diffusers_to_original, is_diffusers_layout
from .model import ControlNet

__all__ = ["FORMATS", "build", "claims", "detect_config", "family_of"]

FAMILY_BY_CONTEXT = {768: "sd1", 1024: "sd2", 2048: "sdxl"}


def family_of(context_dim: int, adm_in_channels: Optional[int]) -> str:
    """The Stable Diffusion family of a UNet or ControlNet from its context width and y-vector width.

    Example:
        >>> family_of(768, None), family_of(2048, 2816), family_of(512, None)
        ('sd1', 'sdxl', 'custom')
    """
    # Of the Stable Diffusion families only SDXL conditions on a y vector (label_emb).
    return "sdxl" if adm_in_channels is not None else FAMILY_BY_CONTEXT.get(context_dim, "custom")


def claims(state_dict: Mapping[str, Tensor]) -> bool:
    """True for ControlNet weights: a hint embedding in either layout."""
    return any(k.startswith(("input_hint_block.", "controlnet_cond_embedding.")) for k in state_dict)


def build(state_dict: Mapping[str, Tensor], *, dtype=None, device=None, global_pool: bool = False,
          config: Optional[ControlNetConfig] = None, base_unet=None, **config_overrides) -> ControlNet:
    """A ready :class:`ControlNet` from weights in the original or the diffusers layout.

    Args:
        state_dict: the weights, ``control_model.`` prefix already stripped.
        dtype: compute dtype; None keeps the stored one.
        device: where the parameters live.
        global_pool: average residuals over space (shuffle models; not visible in the weights).
        config: skip detection and use this architecture.
        base_unet: ignored: a classic ControlNet file carries every weight itself.
        **config_overrides: config fields replacing detected ones (e.g. ``num_heads``).
    """
    if is_diffusers_layout(state_dict):
        state_dict = diffusers_to_original(state_dict)
    config = config or detect_config(state_dict, global_pool)
    if config_overrides:
        config = replace(config, **config_overrides)
    return assemble(lambda: ControlNet(config), state_dict, f"detected {config.family}", dtype=dtype, device=device)


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
            depths.append(len(numbered_indices(keys, rf"input_blocks\.{block}\.1\.transformer_blocks\.(\d+)\.")))
            block += 1
        channel_mult.append(mult)
        block += 1
    k_proj = next((v for k, v in state_dict.items() if k.endswith("attn2.to_k.weight")), None)
    if k_proj is None:
        raise ControlNetFormatError("no cross-attention found: not a Stable Diffusion ControlNet")
    context_dim = k_proj.shape[1]
    label = state_dict.get("label_emb.0.0.weight")
    family = family_of(context_dim, None if label is None else label.shape[1])
    proj_in = next(v for k, v in state_dict.items() if k.endswith("proj_in.weight"))
    use_linear = proj_in.ndim == 2
    # SD1.x fixes the head count, SD2.x/SDXL the head width; other widths follow the projection style.
    fixed_heads = family == "sd1" or (family == "custom" and not use_linear)
    middle = -1
    if "middle_block.2.in_layers.0.weight" in state_dict:
        middle = len(numbered_indices(keys, r"middle_block\.1\.transformer_blocks\.(\d+)\."))
    hint_blocks = numbered_indices(keys, r"input_hint_block\.(\d+)\.weight")
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


FORMATS: Tuple[ModelFormat, ...] = (ModelFormat("controlnet", claims, build),)
