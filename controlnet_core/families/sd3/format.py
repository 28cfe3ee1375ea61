"""Recognising SD3-family ControlNet weights and building :class:`.sd3.SD3ControlNet` from them.

Entries for the format table (``claims`` reads key names and shapes only, ``build`` the weights):

* InstantX SD3 (diffusers names): :func:`claims_instantx`, :func:`build_instantx`.
* Stability SD3.5 (reference names, and diffusers' conversion of them): :func:`claims_sd35`,
  :func:`build_sd35`.

Head counts are not stored in these files: every released model uses 64-channel heads (as
ComfyUI assumes), so that is the default; ``attention_head_dim=`` overrides it (tiny test
models), and RMS-normalised models reveal it through their norm weights.
"""
from __future__ import annotations

import math
import re
from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ...assembly import assemble, numbered_indices
from ...errors import ControlNetFormatError
from ...family import ModelFormat
from .hint import SD35_CONTROL_TYPES
from .model import SD3ControlNet, SD3ControlNetConfig, sd3_controlnet

__all__ = ["claims_instantx", "build_instantx", "claims_sd35", "build_sd35", "sd35_diffusers_to_reference"]

DEFAULT_HEAD_DIM = 64


def _is_sd3_family(state_dict: Mapping[str, Tensor]) -> bool:
    hint = state_dict.get("pos_embed_input.proj.weight")
    return hint is not None and hint.ndim == 4 and "controlnet_blocks.0.weight" in state_dict


def claims_instantx(state_dict: Mapping[str, Tensor]) -> bool:
    """InstantX SD3 layout: patch-embedded hint, joint blocks with context projections."""
    return _is_sd3_family(state_dict) and "transformer_blocks.0.attn.add_q_proj.weight" in state_dict \
        and "pos_embed.proj.weight" in state_dict


def claims_sd35(state_dict: Mapping[str, Tensor]) -> bool:
    """Stability SD3.5 layout: patch-embedded hint, image-only blocks, no latent embedding of its own."""
    if not _is_sd3_family(state_dict) or "pos_embed.proj.weight" in state_dict:
        return False
    return "transformer_blocks.0.adaLN_modulation.1.weight" in state_dict or (
        "transformer_blocks.0.attn.to_q.weight" in state_dict
        and "transformer_blocks.0.attn.add_q_proj.weight" not in state_dict)


def _block_count(state_dict: Mapping[str, Tensor], prefix: str) -> int:
    found = numbered_indices(state_dict, re.escape(prefix) + r"\.(\d+)\.")
    if found != list(range(len(found))):
        raise ControlNetFormatError(f"{prefix} blocks are not numbered 0..n-1: {sorted(found)}")
    return len(found)


def _heads(dim: int, head_dim: Optional[int], norm: Optional[Tensor]) -> int:
    if norm is not None:
        head_dim = norm.shape[0]
    head_dim = head_dim or DEFAULT_HEAD_DIM
    if dim % head_dim:
        raise ControlNetFormatError(f"width {dim} is not a multiple of the {head_dim}-channel heads; "
                                    "pass attention_head_dim= for models with other head sizes")
    return dim // head_dim


def _build(config: SD3ControlNetConfig, state_dict: Dict[str, Tensor], dtype, device) -> SD3ControlNet:
    return assemble(lambda: sd3_controlnet(config), state_dict,
                    f"detected {config.layout} SD3 ControlNet "
                    f"({config.num_layers} blocks of width {config.hidden_size})",
                    dtype=dtype, device=device)


def build_instantx(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
                   attention_head_dim: Optional[int] = None, **options) -> SD3ControlNet:
    """Build an InstantX-layout SD3 ControlNet; sizes come from the weights.

    Args:
        state_dict: diffusers-named weights (``pos_embed.*``, ``transformer_blocks.*``, ...).
        dtype: parameter dtype; None keeps the stored one.
        device: parameter device; None keeps the CPU.
        attention_head_dim: channels per head when not 64 and not stored.
        **options: ignored (other families' options).

    Raises:
        ControlNetFormatError: the weights are incomplete or inconsistent.
    """
    sd = dict(state_dict)
    table = sd.get("pos_embed.pos_embed")
    if table is None:
        raise ControlNetFormatError("this InstantX SD3 ControlNet has no pos_embed.pos_embed position table; "
                                    "re-save it with diffusers' save_pretrained, which stores it")
    proj = sd["pos_embed.proj.weight"]
    dim = proj.shape[0]
    layers = _block_count(sd, "transformer_blocks")
    if _block_count(sd, "controlnet_blocks") != layers:
        raise ControlNetFormatError(f"{layers} transformer blocks but {_block_count(sd, 'controlnet_blocks')} "
                                    "output projections (controlnet_blocks)")
    config = SD3ControlNetConfig(
        layout="instantx", hidden_size=dim,
        num_heads=_heads(dim, attention_head_dim, sd.get("transformer_blocks.0.attn.norm_q.weight")),
        num_layers=layers, patch_size=proj.shape[-1], in_channels=proj.shape[1],
        hint_channels=sd["pos_embed_input.proj.weight"].shape[1],
        context_dim=sd["context_embedder.weight"].shape[1],
        pooled_dim=sd["time_text_embed.text_embedder.linear_1.weight"].shape[1],
        qk_norm="transformer_blocks.0.attn.norm_q.weight" in sd,
        dual_attention_layers=tuple(i for i in range(layers) if f"transformer_blocks.{i}.attn2.to_q.weight" in sd),
        pos_embed_max_size=math.isqrt(table.shape[-2]),
        force_zeros_for_pooled_projection=True,
    )
    return _build(config, sd, dtype, device)


def sd35_diffusers_to_reference(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename diffusers' conversion of an SD3.5 ControlNet back to Stability's names (q, k, v fused).

    Keys already in reference names pass through unchanged.
    """
    out: Dict[str, Tensor] = {}
    renames = {"norm1.linear": "adaLN_modulation.1", "attn.to_out.0": "attn.proj",
               "ff.net.0.proj": "mlp.fc1", "ff.net.2": "mlp.fc2"}
    for key, value in state_dict.items():
        m = re.match(r"(transformer_blocks\.\d+\.)(.+)\.(weight|bias)$", key)
        if m and m.group(2) in ("attn.to_k", "attn.to_v"):
            continue
        if m and m.group(2) == "attn.to_q":
            parts = [state_dict[f"{m.group(1)}attn.to_{x}.{m.group(3)}"] for x in "qkv"]
            out[f"{m.group(1)}attn.qkv.{m.group(3)}"] = torch.cat(parts, 0)
        elif m and m.group(2) in renames:
            out[f"{m.group(1)}{renames[m.group(2)]}.{m.group(3)}"] = value
        else:
            out[key] = value
    return out


def build_sd35(state_dict: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None, device=None,
               attention_head_dim: Optional[int] = None, **options) -> SD3ControlNet:
    """Build a Stability SD3.5 ControlNet (blur / canny / depth); sizes come from the weights.

    The returned module still needs the base model's latent embedding
    (:meth:`.model.SD35ControlNet.with_base_embedder`) before its first forward.

    Args:
        state_dict: reference names (``transformer_blocks.i.attn.qkv``, ``control_type``) or
            diffusers' conversion of them.
        dtype: parameter dtype; None keeps the stored one.
        device: parameter device; None keeps the CPU.
        attention_head_dim: channels per head when not 64.
        **options: ignored (other families' options).

    Raises:
        ControlNetFormatError: the weights are incomplete, or the variant whose pooled vector is
            pre-embedded by the base model (square ``text_embedder.linear_1``), which no public
            model uses and no oracle covers.
    """
    sd = sd35_diffusers_to_reference(state_dict)
    stored_type = sd.pop("control_type", None)
    dim = sd["controlnet_blocks.0.weight"].shape[0]
    text_in = sd["time_text_embed.text_embedder.linear_1.weight"]
    if text_in.shape[1] == dim:
        raise ControlNetFormatError(f"this SD3.5 ControlNet takes a {dim}-wide pooled vector already embedded by "
                                    "the base model (Stability's 2B variant); only the SD3.5 Large layout is supported")
    layers = _block_count(sd, "transformer_blocks")
    hint = sd["pos_embed_input.proj.weight"]
    control_type = None if stored_type is None else float(stored_type.reshape(-1)[0])
    if control_type is not None and control_type not in SD35_CONTROL_TYPES:
        known = ", ".join(f"{k} {v}" for k, v in SD35_CONTROL_TYPES.items())
        raise ControlNetFormatError(f"this SD3.5 ControlNet stores control type {control_type:g}, which is none of "
                                    f"the known ones ({known}); the file is damaged or of a newer kind")
    config = SD3ControlNetConfig(
        layout="sd35", hidden_size=dim, num_heads=_heads(dim, attention_head_dim, None), num_layers=layers,
        patch_size=hint.shape[-1], in_channels=hint.shape[1], hint_channels=hint.shape[1],
        pooled_dim=text_in.shape[1],
        control_type=None if control_type is None else int(control_type),
    )
    return _build(config, sd, dtype, device)


FORMATS: Tuple[ModelFormat, ...] = (
    ModelFormat("SD3 ControlNet (InstantX)", claims_instantx, build_instantx),
    ModelFormat("SD3.5 ControlNet (Stability)", claims_sd35, build_sd35),
)
