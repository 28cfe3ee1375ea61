"""Key layouts of Flux ControlNet files, all brought to one: Black Forest Labs' names.

* **diffusers** (``FluxControlNetModel``; InstantX, Shakker-Labs Union / Union Pro): ``x_embedder``,
  ``transformer_blocks.*`` with separate q/k/v, ``controlnet_x_embedder`` for the packed hint; an
  ``input_hint_block.conv_in`` when the model embeds hint pixels itself (XLabs-style diffusers ports).
* **bfl** (XLabs): ``img_in``, ``double_blocks.*`` with fused qkv, ``pos_embed_input``, the hint
  convolutions as ``input_hint_block.0 .. 14``.
* **mistoline**: bfl names, but the hint convolutions under ``input_cond_block.encoder.*`` and
  each residual projection as ``controlnet_blocks.i.linear`` (followed by a SiLU).
"""
from __future__ import annotations

import re
from typing import Dict, Mapping, Tuple

import torch
from torch import Tensor

__all__ = ["diffusers_to_bfl", "mistoline_to_bfl"]

_TOP = {
    "x_embedder": "img_in",
    "context_embedder": "txt_in",
    "controlnet_x_embedder": "pos_embed_input",
    "time_text_embed.timestep_embedder.linear_1": "time_in.in_layer",
    "time_text_embed.timestep_embedder.linear_2": "time_in.out_layer",
    "time_text_embed.guidance_embedder.linear_1": "guidance_in.in_layer",
    "time_text_embed.guidance_embedder.linear_2": "guidance_in.out_layer",
    "time_text_embed.text_embedder.linear_1": "vector_in.in_layer",
    "time_text_embed.text_embedder.linear_2": "vector_in.out_layer",
}

_DOUBLE = {
    "norm1.linear": "img_mod.lin",
    "norm1_context.linear": "txt_mod.lin",
    "attn.norm_q.weight": "img_attn.norm.query_norm.scale",
    "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
    "attn.to_out.0": "img_attn.proj",
    "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
    "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
    "attn.to_add_out": "txt_attn.proj",
    "ff.net.0.proj": "img_mlp.0",
    "ff.net.2": "img_mlp.2",
    "ff_context.net.0.proj": "txt_mlp.0",
    "ff_context.net.2": "txt_mlp.2",
}
_DOUBLE_FUSED = {
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
}

_SINGLE = {
    "norm.linear": "modulation.lin",
    "attn.norm_q.weight": "norm.query_norm.scale",
    "attn.norm_k.weight": "norm.key_norm.scale",
    "proj_out": "linear2",
}
_SINGLE_FUSED = {"linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp")}

_KEEP = re.compile(r"controlnet_(single_)?blocks\.\d+\.(weight|bias)$|controlnet_mode_embedder\.weight$")


def _rename(key: str, table: Mapping[str, str]) -> str | None:
    """``key`` with a matching prefix (or whole name) replaced, or None when nothing matches."""
    for old, new in table.items():
        if key == old:
            return new
        if key.startswith(old + "."):
            return new + key[len(old):]
    return None


def _hint_block_index(rest: str, num_blocks: int) -> str:
    """diffusers ``ControlNetConditioningEmbedding`` names to the flat sequence (SiLU at odd indices)."""
    if rest.startswith("conv_in."):
        return "0." + rest[len("conv_in."):]
    if rest.startswith("conv_out."):
        return f"{2 * num_blocks + 2}." + rest[len("conv_out."):]
    block, param = rest[len("blocks."):].split(".", 1)
    return f"{2 * int(block) + 2}.{param}"


def diffusers_to_bfl(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """A diffusers ``FluxControlNetModel`` state dict with Black Forest Labs' names.

    Separate q/k/v projections are concatenated into the fused ``qkv`` (and, in single blocks,
    with the MLP input projection into ``linear1``), in that order.

    Args:
        state_dict: diffusers keys, no prefix.

    Returns:
        A new dict; tensors are shared where nothing is fused.

    Raises:
        KeyError: a key this layout does not have (the message lists the first few).

    Example:
        >>> sd = {"x_embedder.weight": torch.zeros(8, 4), "controlnet_blocks.0.bias": torch.zeros(8)}
        >>> sorted(diffusers_to_bfl(sd))
        ['controlnet_blocks.0.bias', 'img_in.weight']
    """
    out: Dict[str, Tensor] = {}
    fused: Dict[str, Tuple[Tuple[str, ...], Dict[str, Tensor]]] = {}
    unknown = []
    hint_blocks = {k.split(".")[2] for k in state_dict if k.startswith("input_hint_block.blocks.")}
    for key, value in state_dict.items():
        if _KEEP.match(key):
            out[key] = value
            continue
        if key.startswith("input_hint_block."):
            out["input_hint_block." + _hint_block_index(key[len("input_hint_block."):], len(hint_blocks))] = value
            continue
        match = re.match(r"(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$", key)
        if match is None:
            new = _rename(key, _TOP)
            if new is None:
                unknown.append(key)
            else:
                out[new] = value
            continue
        kind, index, rest = match.groups()
        prefix, renames, fusions = (
            (f"double_blocks.{index}.", _DOUBLE, _DOUBLE_FUSED) if kind == "transformer_blocks"
            else (f"single_blocks.{index}.", _SINGLE, _SINGLE_FUSED))
        new = _rename(rest, renames)
        if new is not None:
            out[prefix + new] = value
            continue
        for target, parts in fusions.items():
            part = next((p for p in parts if rest.startswith(p + ".")), None)
            if part is not None:
                param = rest[len(part) + 1:]
                fused.setdefault(f"{prefix}{target}.{param}", (parts, {}))[1][part] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise KeyError(f"{len(unknown)} keys that a diffusers Flux ControlNet does not have, e.g. {unknown[:3]}")
    for key, (order, parts) in fused.items():
        missing = [p for p in order if p not in parts]
        if missing:
            raise KeyError(f"{key}: missing {missing} to fuse")
        out[key] = torch.cat([parts[p] for p in order], dim=0)
    return out


def mistoline_to_bfl(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Mistoline keys renamed to the bfl layout (the per-block SiLU is a config flag, not a key).

    Example:
        >>> sorted(mistoline_to_bfl({"controlnet_blocks.0.linear.weight": torch.zeros(1),
        ...                          "input_cond_block.encoder.0.bias": torch.zeros(1)}))
        ['controlnet_blocks.0.weight', 'input_hint_block.0.bias']
    """
    out = {}
    for key, value in state_dict.items():
        key = re.sub(r"^(controlnet_blocks|controlnet_single_blocks)\.(\d+)\.linear\.", r"\1.\2.", key)
        key = re.sub(r"^input_cond_block\.encoder\.", "input_hint_block.", key)
        out[key] = value
    return out
