"""What the transformer families' binders share: the checks of the MODEL's family, token width, text width and
hint VAE, and the hint of inpainting ControlNets."""
from __future__ import annotations

import copy
from dataclasses import replace
from typing import Callable, Optional, Tuple

from torch import Tensor

from ...controlnet_core.injection.inpaint_hint import InpaintRule, inpaint_control_hint, masked_pixels
from ...controlnet_core.injection.weighting import uniform_scales
from ..base import NodeInputError
from ..control import LoadedControlNet, takes_inpaint_mask
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


def inpaint_rule_of(control: LoadedControlNet, node_id: str) -> Optional[InpaintRule]:
    """The hint rule of a latent inpainting ControlNet, None for a plain one; raises if it has no mask."""
    if not takes_inpaint_mask(control.net):
        return None
    if control.inpaint_mask is None:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' is an inpainting ControlNet (latent + mask hint) and has no mask; "
                             "connect it through CNR_InpaintControl with the mask of the region to repaint, and "
                             "give this node the image to inpaint")
    return control.inpaint_rule


def inpaint_hint_encoder(latent_of: Callable[[Tensor], Tensor],
                         rule: Optional[InpaintRule]) -> Callable[[Tensor], Tensor]:
    """``encode_hint`` from the family's ``latent_of`` (pixels in 0..1 to the scaled latent).

    For an inpainting ControlNet (``rule`` given) the hint arrives as :math:`(B, 4, H, W)`, the image with
    the inpaint mask as a fourth channel, both fitted to the latent together by the sampler wrapper; it
    becomes the masked image's latent with the keep channel appended.
    """
    if rule is None:
        return latent_of

    def encode(hint: Tensor) -> Tensor:
        image, mask = hint[:, :3], hint[:, 3:]
        return inpaint_control_hint(latent_of(masked_pixels(image, mask, rule)).float(), mask, rule)

    return encode


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
