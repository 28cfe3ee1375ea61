"""Key layouts of ControlNet weights: original (ldm / ``cldm``) and diffusers, and the conversion."""
from __future__ import annotations

import re
from typing import Dict, List, Mapping, Tuple

from torch import Tensor

__all__ = [
    "is_diffusers_layout",
    "strip_original_prefix",
    "diffusers_to_original",
    "original_to_diffusers",
]

_RESNET_PARTS = (
    ("norm1", "in_layers.0"),
    ("conv1", "in_layers.2"),
    ("time_emb_proj", "emb_layers.1"),
    ("norm2", "out_layers.0"),
    ("conv2", "out_layers.3"),
    ("conv_shortcut", "skip_connection"),
)
_ORIGINAL_PREFIXES = ("control_model.", "model.control_model.")


def is_diffusers_layout(keys) -> bool:
    """True when the keys use diffusers' ``ControlNetModel`` names."""
    return any(k.startswith(("controlnet_cond_embedding.", "controlnet_down_blocks.")) for k in keys)


def strip_original_prefix(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Drop the ``control_model.`` prefix the original training code saves."""
    out = {}
    for key, value in state_dict.items():
        for prefix in _ORIGINAL_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        out[key] = value
    return out


def _level_layout_from_diffusers(keys) -> List[int]:
    """Residual blocks per down level, read from ``down_blocks.{i}.resnets.{j}`` keys."""
    counts: Dict[int, int] = {}
    for key in keys:
        m = re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.", key)
        if m:
            level, j = int(m.group(1)), int(m.group(2))
            counts[level] = max(counts.get(level, 0), j + 1)
    return [counts[i] for i in range(len(counts))]


def _level_layout_from_original(keys) -> List[int]:
    """Residual blocks per level, read from where the ``input_blocks.{n}.0.op`` downsamplers stand."""
    blocks = {int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.", k))}
    downsamplers = sorted({int(m.group(1)) for k in keys if (m := re.match(r"input_blocks\.(\d+)\.0\.op\.", k))})
    layout, start = [], 1
    for d in downsamplers:
        layout.append(d - start)
        start = d + 1
    layout.append(max(blocks) + 1 - start)
    return layout


def _prefix_pairs(res_per_level: List[int], hint_blocks: int) -> List[Tuple[str, str]]:
    """(diffusers prefix, original prefix) pairs, most specific first."""
    pairs = [
        ("conv_in.", "input_blocks.0.0."),
        ("time_embedding.linear_1.", "time_embed.0."),
        ("time_embedding.linear_2.", "time_embed.2."),
        ("add_embedding.linear_1.", "label_emb.0.0."),
        ("add_embedding.linear_2.", "label_emb.0.2."),
        ("controlnet_cond_embedding.conv_in.", "input_hint_block.0."),
        ("controlnet_cond_embedding.conv_out.", f"input_hint_block.{2 * (hint_blocks + 1)}."),
        ("controlnet_mid_block.", "middle_block_out.0."),
        ("mid_block.attentions.0.", "middle_block.1."),
    ]
    pairs += [(f"controlnet_cond_embedding.blocks.{i}.", f"input_hint_block.{2 * (i + 1)}.")
              for i in range(hint_blocks)]
    for j, n in enumerate((0, 2)):
        pairs += [(f"mid_block.resnets.{j}.{d}.", f"middle_block.{n}.{o}.") for d, o in _RESNET_PARTS]
    block = 1
    for level, n_res in enumerate(res_per_level):
        for j in range(n_res):
            pairs += [(f"down_blocks.{level}.resnets.{j}.{d}.", f"input_blocks.{block}.0.{o}.")
                      for d, o in _RESNET_PARTS]
            pairs.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{block}.1."))
            block += 1
        if level != len(res_per_level) - 1:
            pairs.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{block}.0.op."))
            block += 1
    pairs += [(f"controlnet_down_blocks.{n}.", f"zero_convs.{n}.0.") for n in range(block)]
    return pairs


def _rename(state_dict: Mapping[str, Tensor], pairs: List[Tuple[str, str]]) -> Dict[str, Tensor]:
    # Longest source prefix first so "mid_block.resnets.0.conv1." wins over shorter matches.
    pairs = sorted(pairs, key=lambda p: -len(p[0]))
    out: Dict[str, Tensor] = {}
    unmatched = []
    for key, value in state_dict.items():
        for src, dst in pairs:
            if key.startswith(src):
                out[dst + key[len(src):]] = value
                break
        else:
            unmatched.append(key)
    if unmatched:
        raise KeyError(f"{len(unmatched)} keys fit no ControlNet layout, e.g. {unmatched[:3]}")
    return out


def _hint_blocks_diffusers(keys) -> int:
    ids = {int(m.group(1)) for k in keys if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)\.", k))}
    return len(ids)


def _hint_blocks_original(keys) -> int:
    ids = {int(m.group(1)) for k in keys if (m := re.match(r"input_hint_block\.(\d+)\.", k))}
    return len(ids) - 2


def diffusers_to_original(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename diffusers ``ControlNetModel`` weights to the original (ldm) names; tensors are shared.

    Raises:
        KeyError: a key belongs to neither layout.
    """
    keys = list(state_dict)
    pairs = _prefix_pairs(_level_layout_from_diffusers(keys), _hint_blocks_diffusers(keys))
    return _rename(state_dict, pairs)


def original_to_diffusers(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Rename original (ldm) ControlNet weights to diffusers ``ControlNetModel`` names; tensors are shared.

    Raises:
        KeyError: a key belongs to neither layout.
    """
    state_dict = strip_original_prefix(state_dict)
    keys = list(state_dict)
    pairs = _prefix_pairs(_level_layout_from_original(keys), _hint_blocks_original(keys))
    return _rename(state_dict, [(o, d) for d, o in pairs])
