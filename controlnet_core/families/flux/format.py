"""Recognising and building Flux ControlNets from their weights (sizes from shapes, never file names).

Three formats, one ``claims`` / ``build`` pair each in the format table of ``loading.py``:

* diffusers: ``FluxControlNetModel`` files (InstantX, Shakker-Labs Union and
  Union Pro; XLabs-style ports with an ``input_hint_block.conv_in``).
* XLabs: files in Black Forest Labs' names (``double_blocks.*``, ``input_hint_block.N``).
* Mistoline: files (``controlnet_blocks.i.linear``, ``input_cond_block.encoder``),
  as ComfyUI's ``ControlNetFlux(mistoline=True)`` lays them out.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from ...layers.rotary import default_axes_dim
from .model import FluxControlNet, FluxControlNetConfig
from .convert import diffusers_to_bfl, mistoline_to_bfl

__all__ = ["build_flux_diffusers", "build_flux_mistoline", "build_flux_xlabs", "claims_flux_diffusers",
           "claims_flux_mistoline", "claims_flux_xlabs", "detect_flux_config"]

# Strides of the hint convolutions, which the weights cannot tell (ComfyUI's ControlNetFlux).
_XLABS_HINT_STRIDES = (1, 1, 2, 1, 2, 1, 2, 1)
_MISTOLINE_HINT_STRIDES = (1, 1, 1, 2, 1, 2, 1, 2, 1, 1)


def _shape(sd: Mapping[str, Tensor], key: str) -> Tuple[int, ...]:
    try:
        return tuple(sd[key].shape)
    except KeyError:
        raise ControlNetFormatError(f"incomplete Flux ControlNet weights: missing {key}") from None


def detect_flux_config(state_dict: Mapping[str, Tensor], *, hint_strides: Sequence[int] = _XLABS_HINT_STRIDES,
                       residual_activation: bool = False, axes_dim: Optional[Sequence[int]] = None,
                       repeat_mode: Optional[str] = None) -> FluxControlNetConfig:
    """Read a Flux ControlNet's architecture from bfl-named keys and shapes.

    Args:
        state_dict: bfl keys (after :func:`diffusers_to_bfl` / :func:`mistoline_to_bfl`).
        hint_strides: stride of each hint convolution (pixel-hint models).
        residual_activation: the residual projections end in a SiLU (Mistoline).
        axes_dim: rotary channels per axis; :func:`default_axes_dim` when None.
        repeat_mode: residual spreading; None takes ``consecutive`` for latent hints and ``tile``
            for pixel hints (diffusers' pipeline sets ``controlnet_blocks_repeat`` exactly when the
            model has a hint embedding).

    Raises:
        ControlNetFormatError: a key is missing or the shapes do not form a Flux ControlNet.
    """
    keys = list(state_dict)
    hidden, packed_in = _shape(state_dict, "img_in.weight")
    doubles = numbered_indices(keys, r"double_blocks\.(\d+)\.")
    singles = numbered_indices(keys, r"single_blocks\.(\d+)\.")
    if not doubles and not singles:
        raise ControlNetFormatError("Flux ControlNet weights without transformer blocks")
    if doubles:
        head_dim = _shape(state_dict, "double_blocks.0.img_attn.norm.query_norm.scale")[0]
        mlp_hidden = _shape(state_dict, "double_blocks.0.img_mlp.0.weight")[0]
    else:
        head_dim = _shape(state_dict, "single_blocks.0.norm.query_norm.scale")[0]
        mlp_hidden = _shape(state_dict, "single_blocks.0.linear1.weight")[0] - 3 * hidden
    for kind, blocks in (("controlnet_blocks", doubles), ("controlnet_single_blocks", singles)):
        found = numbered_indices(keys, kind + r"\.(\d+)\.")
        if found != list(range(len(blocks))):
            raise ControlNetFormatError(
                f"{len(blocks)} transformer blocks but {kind} {found}: every block needs one residual projection")

    hint_ids = numbered_indices(keys, r"input_hint_block\.(\d+)\.weight")
    convs = tuple((s[1], s[0], s[2], stride) for s, stride in zip(
        (_shape(state_dict, f"input_hint_block.{i}.weight") for i in hint_ids), hint_strides))
    if hint_ids and len(hint_ids) != len(hint_strides):
        raise ControlNetFormatError(
            f"{len(hint_ids)} hint convolutions where this format has {len(hint_strides)}")
    pos_in = _shape(state_dict, "pos_embed_input.weight")[1]
    hint_channels = convs[0][0] if convs else pos_in // 4
    if (convs[-1][1] if convs else hint_channels) * 4 != pos_in or packed_in % 4:
        raise ControlNetFormatError(
            f"hint projection takes {pos_in} channels and img_in {packed_in}: not 2x2-packed Flux tokens")
    mode = state_dict.get("controlnet_mode_embedder.weight")
    try:
        return FluxControlNetConfig(
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            depth=len(doubles),
            depth_single_blocks=len(singles),
            in_channels=packed_in // 4,
            context_dim=_shape(state_dict, "txt_in.weight")[1],
            adm_in_channels=_shape(state_dict, "vector_in.in_layer.weight")[1],
            mlp_hidden=mlp_hidden,
            qkv_bias="double_blocks.0.img_attn.qkv.bias" in state_dict or not doubles,
            guidance_embed="guidance_in.in_layer.weight" in state_dict,
            axes_dim=tuple(axes_dim) if axes_dim is not None else default_axes_dim(head_dim),
            num_union_modes=0 if mode is None else mode.shape[0],
            hint_input="pixels" if convs else "latent",
            hint_channels=hint_channels,
            hint_convs=convs,
            residual_activation=residual_activation,
            repeat_mode=repeat_mode or ("tile" if convs else "consecutive"),
        )
    except ValueError as e:
        raise ControlNetFormatError(f"not a buildable Flux ControlNet: {e}") from None


def _build(state_dict: Dict[str, Tensor], config: FluxControlNetConfig, dtype, device) -> FluxControlNet:
    return assemble(lambda: FluxControlNet(config), state_dict,
                    f"detected Flux ControlNet ({config.depth} double, {config.depth_single_blocks} single blocks)",
                    dtype=dtype, device=device)


def claims_flux_diffusers(state_dict: Mapping[str, Tensor]) -> bool:
    """diffusers ``FluxControlNetModel`` keys: a linear ``x_embedder``, ``controlnet_x_embedder`` and Flux blocks.

    SD3 ControlNets embed patches with a convolution (``pos_embed``) and have no
    ``controlnet_x_embedder``; Qwen-Image ones name their blocks ``img_mod`` / ``img_mlp``.
    """
    x_embedder = state_dict.get("x_embedder.weight")
    return (x_embedder is not None and x_embedder.ndim == 2 and "controlnet_x_embedder.weight" in state_dict
            and ("transformer_blocks.0.norm1_context.linear.weight" in state_dict
                 or "single_transformer_blocks.0.proj_mlp.weight" in state_dict))


def claims_flux_xlabs(state_dict: Mapping[str, Tensor]) -> bool:
    """Black Forest Labs' names (``img_in``) with the ControlNet's hint input ``pos_embed_input``.

    Blocks are not required to claim: a file whose blocks are missing is a damaged Flux ControlNet and is
    refused as one (not as a classic ControlNet, whose hint-block key XLabs files share). Mistoline's
    ``controlnet_blocks.i.linear`` projections make a file Mistoline's, not XLabs'.
    """
    return ("img_in.weight" in state_dict and "pos_embed_input.weight" in state_dict
            and not claims_flux_mistoline(state_dict))


def claims_flux_mistoline(state_dict: Mapping[str, Tensor]) -> bool:
    """Black Forest Labs' block names with ``controlnet_blocks.i.linear`` projections."""
    return "img_in.weight" in state_dict and "controlnet_blocks.0.linear.weight" in state_dict


def build_flux_diffusers(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                    axes_dim: Optional[Sequence[int]] = None, **options) -> FluxControlNet:
    """A :class:`FluxControlNet` from diffusers-named weights (options other than ``axes_dim`` are ignored)."""
    try:
        converted = diffusers_to_bfl(state_dict)
    except KeyError as e:
        raise ControlNetFormatError(f"diffusers Flux ControlNet weights with {e.args[0]}") from None
    return _build(converted, detect_flux_config(converted, axes_dim=axes_dim), dtype, device)


def build_flux_xlabs(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                axes_dim: Optional[Sequence[int]] = None, **options) -> FluxControlNet:
    """A :class:`FluxControlNet` from XLabs (bfl-named) weights."""
    return _build(dict(state_dict), detect_flux_config(state_dict, axes_dim=axes_dim), dtype, device)


def build_flux_mistoline(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                    axes_dim: Optional[Sequence[int]] = None, **options) -> FluxControlNet:
    """A :class:`FluxControlNet` from Mistoline weights (SiLU residual projections, tiled like ComfyUI)."""
    converted = mistoline_to_bfl(state_dict)
    config = detect_flux_config(converted, hint_strides=_MISTOLINE_HINT_STRIDES, residual_activation=True,
                                axes_dim=axes_dim, repeat_mode="tile_all")
    return _build(converted, config, dtype, device)


FORMATS: Tuple[ModelFormat, ...] = (
    ModelFormat("Flux ControlNet (Mistoline)", claims_flux_mistoline, build_flux_mistoline),
    # XLabs files share the classic ControlNet's hint-block key, so they come before it.
    ModelFormat("Flux ControlNet (XLabs)", claims_flux_xlabs, build_flux_xlabs),
    ModelFormat("Flux ControlNet (diffusers: InstantX, Shakker-Labs)", claims_flux_diffusers, build_flux_diffusers),
)
