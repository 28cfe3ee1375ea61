"""Tiny seeded T2I-Adapters, built with diffusers (the oracle), and the TencentARC layout ComfyUI loads."""
import re

import diffusers
import torch

from tiny_models import randomize_all

CHANNELS = [32, 64, 128, 128]
KINDS = {  # diffusers adapter_type: (channels, unshuffle)
    "full_adapter": (CHANNELS, 8),
    "light_adapter": (CHANNELS[:3], 8),  # diffusers' light adapter repeats its last width once more
    "full_adapter_xl": (CHANNELS, 16),
}


def tiny_adapter(kind: str, in_channels: int = 3, seed: int = 0) -> diffusers.T2IAdapter:
    channels, unshuffle = KINDS[kind]
    torch.manual_seed(seed)
    model = diffusers.T2IAdapter(in_channels=in_channels, channels=channels, num_res_blocks=2,
                                 downscale_factor=unshuffle, adapter_type=kind)
    return randomize_all(model, seed)


def to_original(diffusers_sd: dict, kind: str) -> dict:
    """TencentARC's layout, as ComfyUI's ``Adapter`` / ``Adapter_light`` name their parameters."""
    out = {}
    for key, value in diffusers_sd.items():
        key = key[len("adapter."):]
        if kind == "light_adapter":
            out[re.sub(r"^body\.(\d+)\.resnets\.", r"body.\1.body.", key)] = value
            continue
        # Full adapters number their residual blocks across levels; a level's in_conv sits on its first.
        m = re.match(r"body\.(\d+)\.(?:resnets\.(\d+)\.)?(.+)$", key)
        if m is None:
            out[key] = value
        else:
            out[f"body.{int(m.group(1)) * 2 + int(m.group(2) or 0)}.{m.group(3)}"] = value
    return out
