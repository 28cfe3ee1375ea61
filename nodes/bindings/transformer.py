"""Checks shared by the transformer families' binders: the MODEL's family, token width, text width and hint VAE."""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Tuple

from ...controlnet_core.injection.weighting import uniform_scales
from ..base import NodeInputError
from ..control import LoadedControlNet
from ..model_info import image_token_width, model_family, model_name, text_width
from .binding import ScalesRule, refuse_other_family


def check_transformer_fits(model, control: LoadedControlNet, node_id: str) -> None:
    """Raise unless a transformer ControlNet meets a MODEL of its family, token width and text width."""
    cfg = control.net.config
    kind, name = model_family(model), model_name(model)
    if kind != cfg.family:
        refuse_other_family(kind, name, control, node_id)
    width = image_token_width(model)
    if width != cfg.hidden_size:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' adds {cfg.hidden_size}-wide residuals but the model's image tokens "
                             f"are {width} wide ({name}); load a ControlNet made for this model")
    context = getattr(cfg, "context_dim", None)
    text = text_width(model)
    if context is not None and text is not None and context != text:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' reads {context}-wide text tokens but the model's text encoders give "
                             f"{text} ({name}); load a ControlNet made for this model")


def hint_vae_of(control: LoadedControlNet, node_id: str):
    """The VAE of a latent-hint control (``CNR_HintVAE``); None for a pixel-hint one."""
    if control.net.hint_input != "latent":
        return None
    if control.hint_vae is None:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' takes its control image as a VAE latent; connect the loader "
                             "through CNR_HintVAE with the model's VAE")
    return control.hint_vae


def refuse_inpainting(control: LoadedControlNet, hint_channels: int, latent_channels: int, node_id: str) -> None:
    """Raise for an inpainting ControlNet (latent + mask hint), which the Apply node does not feed yet."""
    if hint_channels > latent_channels:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' is an inpainting ControlNet (latent + mask hint); the Apply node "
                             "does not feed it a mask yet: use ComfyUI's ControlNet nodes for it")


def with_rotary_split(control: LoadedControlNet, axes_dim: Tuple[int, ...]) -> LoadedControlNet:
    """``control`` with the MODEL's rotary split (Flux, Qwen-Image: not stored in the weights).

    A shallow copy of the net shares the parameters, so the control's patcher still moves every weight;
    only the frozen config differs. The loaded control is unchanged.
    """
    net = control.net
    if tuple(net.config.axes_dim) == tuple(axes_dim):
        return control
    view = copy.copy(net)
    view.config = replace(net.config, axes_dim=tuple(axes_dim))
    return replace(control, net=view)


def uniform_rule(count: int) -> ScalesRule:
    """The transformer families' strength rule: strength times the block weight, ``balanced`` mode only."""
    return lambda strength, mode, _soft_base, weights: uniform_scales(count, strength, mode, weights)
