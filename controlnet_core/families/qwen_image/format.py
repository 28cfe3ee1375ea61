"""Recognising and building Qwen-Image ControlNets from their weights (sizes from shapes).

InstantX files keep diffusers' ``QwenImageControlNetModel`` names, which the module uses as they are:
``img_in``, ``txt_in``, ``txt_norm``, ``time_text_embed``, ``transformer_blocks.*`` (Qwen dual-stream
blocks), ``controlnet_blocks.*`` and ``controlnet_x_embedder`` (64 wide for Union, 68 for Inpainting).

Qwen-Image-2512 Fun files (alibaba-pai) hold ``control_img_in`` (132 wide: 33 channels packed 2x2) and
``control_blocks.*`` (Qwen dual-stream blocks with ``after_proj``, block 0 also ``before_proj``); they
borrow the rest from the base model (:mod:`.fun`).
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from ...layers.rotary import default_axes_dim
from .fun import QwenFunConfig, QwenFunControlNet
from .model import PATCH, QwenImageControlNet, QwenImageControlNetConfig

__all__ = ["FORMATS", "build_qwen_fun", "build_qwen_instantx", "claims_qwen_fun", "claims_qwen_instantx",
           "detect_qwen_config", "detect_qwen_fun_config"]


def _shape(sd: Mapping[str, Tensor], key: str) -> Tuple[int, ...]:
    try:
        return tuple(sd[key].shape)
    except KeyError:
        raise ControlNetFormatError(f"incomplete Qwen-Image ControlNet weights: missing {key}") from None


def detect_qwen_config(state_dict: Mapping[str, Tensor], *,
                       axes_dim: Optional[Sequence[int]] = None) -> QwenImageControlNetConfig:
    """Read a Qwen-Image InstantX ControlNet's architecture from its keys and shapes.

    Args:
        state_dict: diffusers-named weights.
        axes_dim: rotary channels per axis; :func:`default_axes_dim` of the head width when None.

    Raises:
        ControlNetFormatError: a key is missing, or the shapes do not form a Qwen-Image ControlNet
            (e.g. a hint projection that is neither the latent's width nor the latent's plus a mask's).
    """
    keys = list(state_dict)
    hidden, packed_in = _shape(state_dict, "img_in.weight")
    blocks = numbered_indices(keys, r"transformer_blocks\.(\d+)\.")
    projections = numbered_indices(keys, r"controlnet_blocks\.(\d+)\.")
    if not blocks or blocks != list(range(len(blocks))):
        raise ControlNetFormatError(f"Qwen-Image ControlNet weights with transformer blocks {blocks}: expected 0..n-1")
    if projections != blocks:
        raise ControlNetFormatError(f"{len(blocks)} transformer blocks but controlnet_blocks {projections}: every "
                                    "block needs one residual projection")
    patch_area = PATCH * PATCH
    hint_width = _shape(state_dict, "controlnet_x_embedder.weight")[1]
    if packed_in % patch_area or hint_width not in (packed_in, packed_in + patch_area):
        raise ControlNetFormatError(
            f"controlnet_x_embedder takes {hint_width} channels and img_in {packed_in}: a Qwen-Image ControlNet's "
            f"hint is the 2x2-packed latent ({packed_in}, Union) or the latent and its mask "
            f"({packed_in + patch_area}, Inpainting)")
    head_dim = _shape(state_dict, "transformer_blocks.0.attn.norm_q.weight")[0]
    if head_dim == 0 or hidden % head_dim:
        raise ControlNetFormatError(f"a {head_dim}-wide attention head does not divide the {hidden}-wide tokens")
    try:
        return QwenImageControlNetConfig(
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            depth=len(blocks),
            in_channels=packed_in // patch_area,
            context_dim=_shape(state_dict, "txt_in.weight")[1],
            mlp_hidden=_shape(state_dict, "transformer_blocks.0.img_mlp.net.0.proj.weight")[0],
            hint_channels=hint_width // patch_area,
            axes_dim=tuple(axes_dim) if axes_dim is not None else default_axes_dim(head_dim),
        )
    except ValueError as e:
        raise ControlNetFormatError(f"not a buildable Qwen-Image ControlNet: {e}") from None


def claims_qwen_instantx(state_dict: Mapping[str, Tensor]) -> bool:
    """Qwen dual-stream blocks (``img_mlp.net``) with ``controlnet_blocks`` (ComfyUI's detection keys)."""
    return ("controlnet_blocks.0.weight" in state_dict
            and "transformer_blocks.0.img_mlp.net.0.proj.weight" in state_dict)


def build_qwen_instantx(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                        axes_dim: Optional[Sequence[int]] = None, **options) -> QwenImageControlNet:
    """A :class:`QwenImageControlNet` from InstantX weights (options other than ``axes_dim`` are ignored)."""
    config = detect_qwen_config(state_dict, axes_dim=axes_dim)
    kind = "Inpainting" if config.is_inpainting else "Union"
    return assemble(lambda: QwenImageControlNet(config), state_dict,
                    f"detected Qwen-Image InstantX {kind} ControlNet ({config.depth} blocks)",
                    dtype=dtype, device=device)


def detect_qwen_fun_config(state_dict: Mapping[str, Tensor], *,
                           axes_dim: Optional[Sequence[int]] = None) -> QwenFunConfig:
    """Read a Qwen-Image Fun ControlNet's architecture from its keys and shapes.

    Args:
        state_dict: the file's weights (``control_img_in``, ``control_blocks.*``).
        axes_dim: rotary channels per axis; :func:`default_axes_dim` of the head width when None (the Apply
            node gives it the MODEL's).

    Raises:
        ControlNetFormatError: a key is missing, or the shapes do not form a Fun ControlNet (a hint projection
            whose width is not a 2x2-packed control latent, mask and inpaint latent).
    """
    if "control_blocks.0.img_mlp.out.weight" in state_dict:
        raise ControlNetFormatError(
            "a Qwen-Image-2.1 Fun ControlNet (a model patch, img_mlp.out blocks): not supported by this pack; use "
            "ComfyUI's ModelPatchLoader and its Qwen-Image Fun ControlNet node")
    hidden, hint_width = _shape(state_dict, "control_img_in.weight")
    blocks = numbered_indices(list(state_dict), r"control_blocks\.(\d+)\.")
    if not blocks or blocks != list(range(len(blocks))):
        raise ControlNetFormatError(f"Qwen-Image Fun ControlNet weights with control blocks {blocks}: expected 0..n-1")
    patch_area = PATCH * PATCH
    channels = hint_width // patch_area
    if hint_width % patch_area or channels % 2 == 0:
        raise ControlNetFormatError(
            f"control_img_in takes {hint_width} features: a Qwen-Image Fun ControlNet's hint is the control latent, "
            f"a mask channel and the inpaint latent (2 C + 1 channels, e.g. 33), packed 2x2 (132)")
    head_dim = _shape(state_dict, "control_blocks.0.attn.norm_q.weight")[0]
    if head_dim == 0 or hidden % head_dim:
        raise ControlNetFormatError(f"a {head_dim}-wide attention head does not divide the {hidden}-wide tokens")
    try:
        return QwenFunConfig(
            hidden_size=hidden,
            num_heads=hidden // head_dim,
            depth=len(blocks),
            in_channels=(channels - 1) // 2,
            mlp_hidden=_shape(state_dict, "control_blocks.0.img_mlp.net.0.proj.weight")[0],
            axes_dim=tuple(axes_dim) if axes_dim is not None else default_axes_dim(head_dim),
        )
    except ValueError as e:
        raise ControlNetFormatError(f"not a buildable Qwen-Image Fun ControlNet: {e}") from None


def claims_qwen_fun(state_dict: Mapping[str, Tensor]) -> bool:
    """The Fun hint projection with the control blocks' skip projection (ComfyUI's detection keys)."""
    return "control_img_in.weight" in state_dict and "control_blocks.0.after_proj.weight" in state_dict


def build_qwen_fun(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                   axes_dim: Optional[Sequence[int]] = None, **options) -> QwenFunControlNet:
    """A :class:`QwenFunControlNet` from alibaba-pai's weights (options other than ``axes_dim`` are ignored)."""
    config = detect_qwen_fun_config(state_dict, axes_dim=axes_dim)
    return assemble(lambda: QwenFunControlNet(config), state_dict,
                    f"detected Qwen-Image Fun ControlNet Union ({config.depth} control blocks)",
                    dtype=dtype, device=device)


FORMATS: Tuple[ModelFormat, ...] = (
    ModelFormat("Qwen-Image ControlNet (InstantX Union, Inpainting)", claims_qwen_instantx, build_qwen_instantx),
    ModelFormat("Qwen-Image Fun ControlNet Union (alibaba-pai)", claims_qwen_fun, build_qwen_fun),
)
