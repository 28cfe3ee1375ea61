"""``CNR_CONTROLNET``, the socket value every control node passes on: the core module and what travels with it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch
from torch import Tensor

import comfy.model_management

from ..controlnet_core.injection.inpaint_hint import InpaintRule
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
        inpaint_mask: for inpainting ControlNets (latent + mask hint), the ComfyUI MASK :math:`(B, H, W)`,
            1 where the sampler repaints; None for plain control.
        inpaint_image: the image to inpaint :math:`(N, C, H, W)` in [0, 1] for families whose hint holds it
            beside a control image (Qwen-Image Fun, Z-Image Fun); None where the Apply node's image is it.
        inpaint_rule: how the hint of a latent inpainting ControlNet is built from the image and
            ``inpaint_mask`` (:data:`~..controlnet_core.injection.inpaint_hint.INPAINT_RULES`).
    """

    net: object
    patcher: object
    name: str
    control_type: Tuple[int, ...] = ()
    extra_hints: Tuple[Tensor, ...] = ()
    hint_vae: object = None
    inpaint_mask: Optional[Tensor] = None
    inpaint_image: Optional[Tensor] = None
    inpaint_rule: InpaintRule = "reference"


def takes_inpaint_mask(net) -> bool:
    """Whether ``net`` is a latent inpainting ControlNet: its hint is the latent plus one mask channel
    (SD3 / Flux AliMama 17 channels, Qwen-Image InstantX Inpainting 17, packed 68)."""
    cfg = getattr(net, "config", None)
    return (getattr(net, "hint_input", None) == "latent" and hasattr(cfg, "hint_channels")
            and cfg.hint_channels == cfg.in_channels + 1)


def takes_inpaint_parts(net) -> bool:
    """Whether ``net`` is a Fun ControlNet whose hint holds an inpaint part beside the control latent:
    control latent | keep mask | inpaint latent, ``2 * in_channels + 1`` channels (Qwen-Image 2512 Fun,
    Z-Image Fun 2.x)."""
    cfg = getattr(net, "config", None)
    return (getattr(net, "hint_input", None) == "latent" and hasattr(cfg, "hint_channels")
            and cfg.hint_channels == 2 * cfg.in_channels + 1)


def wrap_controlnet(net, name: str) -> LoadedControlNet:
    """``net`` with the patcher ComfyUI uses for its own ControlNets; a pending Control-LoRA, not yet a
    module, gets its patcher when it is completed."""
    if not isinstance(net, torch.nn.Module):
        return LoadedControlNet(net=net, patcher=None, name=name)
    patcher = compat.patcher_class()(net, load_device=comfy.model_management.get_torch_device(),
                                     offload_device=comfy.model_management.unet_offload_device())
    return LoadedControlNet(net=net, patcher=patcher, name=name)
