"""What the shared sampler wrapper needs to know about one control family on one MODEL.

:class:`FamilyBinding` is made once, when the Apply node runs, from the MODEL and the loaded
control; the wrapper in ``adapter.py`` reads it and never asks which family it serves. UNet
families (SD1.x, SD2.x, SDXL ControlNets and T2I-Adapters) take :data:`UNET`; Flux and SD3
ControlNets get a binding from :func:`bind` saying how many own residuals they have, how their
control image becomes the net's hint (VAE-encoded for latent-hint models), which extra
conditioning the forward takes (Flux's ``guidance``), how masks reach image tokens and how the
residuals spread over the base model's blocks.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

import comfy.model_management

from ..controlnet_core.layers.attention import AttentionFn
from ..controlnet_core.families.flux.model import FluxControlNet, expand_to_base
from ..controlnet_core.families.flux.tokens import PATCH as FLUX_PATCH
from ..controlnet_core.residuals import ControlResiduals
from ..controlnet_core.families.sd3.model import SD3ControlNet, expand_to_joint_blocks
from ..controlnet_core.families.sd3.hint import hint_latent, sd35_hint_pixels
from . import compat
from .base import NodeInputError

TRANSFORMER_FAMILIES = ("flux", "sd3")
SD3_JOINT_BLOCK_RULES = {"instantx": "diffusers", "sd35": "comfyui"}
"""How SD3 residuals spread over joint blocks (:func:`.sd3.joint_block_indices`), by layout. InstantX:
diffusers' rule, which ComfyUI's equals for the released models (24 joint blocks, 6 or 12 ControlNet
blocks). SD3.5: the rule of Stability's reference, the models' own, which gives the last joint block a
residual too (ComfyUI's rule here; diffusers gives it none)."""


@dataclass(frozen=True, eq=False)
class FamilyBinding:
    """One control family bound to one MODEL (see the module docstring).

    Attributes:
        input_popped: the model pops ``control['input']`` from the end (ComfyUI's UNet) rather than
            indexing it in block order (Flux, MMDiT).
        num_residuals: the control's own residuals (one block weight each); None for UNet
            families, whose Apply branch counts them.
        weights_layout: what ``block_weights`` lists, for messages.
        hint_scale: control-image pixels per latent pixel; None = the net's ``hint_downscale``.
        encode_hint: control image :math:`(B, 3, H, W)` in 0..1 to the net's hint (a VAE latent);
            None = the image itself.
        cond_keys: conditioning entries passed to the forward under their own names.
        patch: latent pixels per image token when residuals are tokens :math:`(B, N, D)`; None
            for :math:`(B, C, H, W)` maps.
        expand: spreads the control's own (already weighted) residuals over the base model's
            blocks; None = they already match.
        attention: the attention kernel the forward takes (ComfyUI's, as the base model beside it
            uses); None for forwards without one.
    """

    input_popped: bool = True
    num_residuals: Optional[int] = None
    weights_layout: str = ""
    hint_scale: Optional[int] = None
    encode_hint: Optional[Callable[[Tensor], Tensor]] = None
    cond_keys: Tuple[str, ...] = ()
    patch: Optional[int] = None
    expand: Optional[Callable[[ControlResiduals], ControlResiduals]] = None
    attention: Optional[AttentionFn] = None

    def hint_size(self, net: torch.nn.Module, height: int, width: int) -> Tuple[int, int]:
        """Control-image size for a latent of ``height`` x ``width``."""
        scale = net.hint_downscale if self.hint_scale is None else self.hint_scale
        return height * scale, width * scale

    def token_grid(self, height: int, width: int) -> Optional[Tuple[int, int]]:
        """The image-token grid of a latent of ``height`` x ``width``; None for UNet residual maps."""
        return None if self.patch is None else (-(-height // self.patch), -(-width // self.patch))


UNET = FamilyBinding()


def model_family(model) -> str:
    """``"flux"``, ``"sd3"`` or ``"unet"`` from the MODEL's diffusion model (its block lists)."""
    dm = model.model.diffusion_model
    if hasattr(dm, "double_blocks") and hasattr(dm, "single_blocks"):
        return "flux"
    if hasattr(dm, "joint_blocks"):
        return "sd3"
    return "unet"


VAE_DOWNSCALE = 8  # image pixels per latent pixel for every family this pack controls


def pixel_grid(model) -> int:
    """Image pixels per side of one step of the MODEL's token grid: the VAE's 8 times the transformer's
    (integer) patch size (Flux and SD3: 2, so 16); UNets work per latent pixel (8)."""
    patch = getattr(model.model.diffusion_model, "patch_size", None)
    return VAE_DOWNSCALE * patch if isinstance(patch, int) else VAE_DOWNSCALE


def _model_name(model) -> str:
    return type(model.model.model_config).__name__


def check_transformer_fits(model, control, node_id: str) -> None:
    """Raise unless a Flux / SD3 ControlNet meets a MODEL of its family and width (either side a transformer)."""
    cfg = control.net.config
    family, name = model_family(model), _model_name(model)
    if family != cfg.family:
        fix = (f"load a ControlNet made for {name}" if family != "unet" else
               f"use a {cfg.family.upper()} model, or a ControlNet made for {name}")
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' is a {cfg.family.upper()} ControlNet but the model is {name} "
                             f"({'a UNet' if family == 'unet' else 'a ' + family.upper() + ' transformer'}); {fix}")
    dm = model.model.diffusion_model
    width = dm.hidden_size if family == "flux" else dm.x_embedder.proj.out_channels
    if width != cfg.hidden_size:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' adds {cfg.hidden_size}-wide residuals but the model's image tokens "
                             f"are {width} wide ({name}); load a ControlNet made for this model")


def bind(model, control, node_id: str) -> Tuple[FamilyBinding, object]:
    """The binding of ``control`` on ``model`` and the control to run there.

    Returns:
        :data:`UNET` and ``control`` itself for UNet families; a transformer family's binding
        (checked to fit) and ``control``, or a copy whose net shares every weight: for a Flux
        ControlNet whose rotary split differs from the MODEL's (it is not stored in the weights),
        with the MODEL's split; for an SD3.5 ControlNet, with the MODEL's patch embedding.
    """
    net = control.net
    if not isinstance(net, (FluxControlNet, SD3ControlNet)):
        return UNET, control
    check_transformer_fits(model, control, node_id)
    vae = getattr(control, "hint_vae", None)
    latent_hint = isinstance(net, SD3ControlNet) or net.config.hint_input == "latent"
    if latent_hint and vae is None:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' takes its control image as a VAE latent; connect the loader "
                             "through CNR_HintVAE with the model's VAE")
    dm = model.model.diffusion_model
    if isinstance(net, FluxControlNet):
        control = _with_rotary_split(control, tuple(dm.params.axes_dim))
        return _bind_flux(net, control, dm, model, vae if latent_hint else None, node_id), control
    if net.config.layout == "sd35":
        control = _with_base_embedder(control, dm)
    return _bind_sd3(net, control, dm, vae, node_id), control


def _with_base_embedder(control, dm):
    """An SD3.5 ControlNet taking this MODEL's patch embedding and position table (Stability's reference
    and diffusers; ComfyUI adds its own table instead). The loaded net is left as it is: the copy shares
    every weight and has its own module slot for the borrowed embedder, and a patcher of its own."""
    from .adapter import wrap_controlnet  # adapter imports this module
    view = copy.copy(control.net)
    view._modules = dict(control.net._modules)
    view.use_base_embedder({k: v for k, v in dm.state_dict().items()
                            if k.startswith("x_embedder.") or k == "pos_embed"})
    return replace(control, net=view, patcher=wrap_controlnet(view, control.name).patcher)


def _with_rotary_split(control, axes_dim: Tuple[int, ...]):
    net = control.net
    if tuple(net.config.axes_dim) == axes_dim:
        return control
    # A shallow copy shares the submodule and parameter dicts, so the control's patcher still moves
    # every weight; only the frozen config differs.
    view = copy.copy(net)
    view.config = replace(net.config, axes_dim=axes_dim)
    return replace(control, net=view)


def _refuse_inpainting(control, channels: int, latent_channels: int, node_id: str) -> None:
    if channels > latent_channels:
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' is an inpainting ControlNet (latent + mask hint); the Apply node "
                             "does not feed it a mask yet: use ComfyUI's ControlNet nodes for it")


def _bind_flux(net: FluxControlNet, control, dm, model, vae, node_id: str) -> FamilyBinding:
    cfg = net.config
    if vae is not None:
        _refuse_inpainting(control, cfg.hint_channels, cfg.in_channels, node_id)
    num_double, num_single = len(dm.double_blocks), len(dm.single_blocks)
    latent_format = model.model.latent_format
    return FamilyBinding(
        input_popped=False,
        num_residuals=cfg.depth + cfg.depth_single_blocks,
        weights_layout=f"{cfg.depth} double blocks, then {cfg.depth_single_blocks} single blocks",
        hint_scale=None if vae is None else _vae_scale(vae),
        encode_hint=None if vae is None else (lambda image: latent_format.process_in(_encode(vae, image))),
        cond_keys=("guidance",) if cfg.guidance_embed else (),
        patch=FLUX_PATCH,
        expand=lambda res: expand_to_base(res, num_double, num_single, repeat_mode=cfg.repeat_mode),
        attention=compat.attention_kernel(),
    )


def _bind_sd3(net: SD3ControlNet, control, dm, vae, node_id: str) -> FamilyBinding:
    cfg = net.config
    _refuse_inpainting(control, cfg.hint_channels, cfg.in_channels, node_id)
    blocks = len(dm.joint_blocks)
    return FamilyBinding(
        input_popped=False,
        num_residuals=cfg.num_layers,
        weights_layout=f"{cfg.num_layers} ControlNet blocks",
        hint_scale=_vae_scale(vae),
        # SD3.5's type-specific preprocessing as its reference does it (canny: 127.5 a + 0.5 at the encoder).
        encode_hint=lambda image: hint_latent(_encode(vae, sd35_hint_pixels(image, cfg.control_type)).float(), cfg),
        patch=cfg.patch_size,
        expand=lambda res: expand_to_joint_blocks(res, blocks, cfg.layout, SD3_JOINT_BLOCK_RULES[cfg.layout]),
        attention=compat.attention_kernel(),
    )


def _vae_scale(vae) -> int:
    # ComfyUI's VAE reports its downscale from 2024-07 builds on; every SD3 / Flux VAE is 8x.
    scale = getattr(vae, "spacial_compression_encode", None)
    return int(scale()) if scale is not None else 8


def _encode(vae, image: Tensor) -> Tensor:
    """The raw VAE latent of ``image`` (B, 3, H, W) in 0..1, as ComfyUI's ControlNet encodes hints
    during sampling: the models loaded before the VAE are loaded back afterwards."""
    loaded = [m for m in comfy.model_management.loaded_models(only_currently_used=True) if m is not None]
    latent = vae.encode(image.movedim(1, -1))
    comfy.model_management.load_models_gpu(loaded)
    return latent
