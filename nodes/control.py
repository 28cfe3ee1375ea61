"""``CNR_CONTROLNET``, the socket value every control node passes on: the core module and what travels with it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

import comfy.model_management

from . import compat


@dataclass(frozen=True, eq=False)
class LoadedControlNet:
    """What ``CNR_CONTROLNET`` carries: the core module and the patcher that moves it.

    Attributes:
        net: the core module (a :class:`~..controlnet_core.family.ControlModel`), or a pending Control-LoRA
            (patcher None) until the Apply node completes it with the MODEL's weights.
        patcher: the ComfyUI patcher that loads ``net`` for sampling.
        name: the file name, for messages.
        control_type: ControlNet Union types (the first for the Apply node's image, the others for
            ``extra_hints`` in order) or a Flux union mode. Empty for other families.
        extra_hints: the control images of the further Union types, each :math:`(N, C, H, W)`.
        hint_vae: the VAE that encodes the control image of latent-hint models (``CNR_HintVAE``).
    """

    net: object
    patcher: object
    name: str
    control_type: Tuple[int, ...] = ()
    extra_hints: Tuple[Tensor, ...] = ()
    hint_vae: object = None


def wrap_controlnet(net, name: str) -> LoadedControlNet:
    """``net`` with the patcher ComfyUI uses for its own ControlNets; a pending Control-LoRA, not yet a
    module, gets its patcher when it is completed."""
    if not isinstance(net, torch.nn.Module):
        return LoadedControlNet(net=net, patcher=None, name=name)
    patcher = compat.patcher_class()(net, load_device=comfy.model_management.get_torch_device(),
                                     offload_device=comfy.model_management.unet_offload_device())
    return LoadedControlNet(net=net, patcher=patcher, name=name)
