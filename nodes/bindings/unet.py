"""Binders of the UNet families: classic ControlNets, ControlNet Union, Control-LoRA and T2I-Adapters.

Each checks the control fits the MODEL's UNet (context width, SDXL y vector, block channels) and returns
its :class:`~.binding.FamilyBinding`; Union checks its types were chosen, Control-LoRA merges with the UNet.
"""
from __future__ import annotations

import weakref
from dataclasses import replace

import torch

from ...controlnet_core.errors import ControlNetFormatError
from ...controlnet_core.families.control_lora.model import ControlLora
from ...controlnet_core.families.t2i_adapter.model import feature_scales
from ...controlnet_core.injection.weighting import block_scales
from .. import compat
from ..base import NodeInputError
from ..control import LoadedControlNet, wrap_controlnet
from ..model_info import model_family, model_name
from .binding import FamilyBinding, refuse_other_family

import comfy.model_management

_MERGED: "weakref.WeakKeyDictionary[ControlLora, weakref.WeakKeyDictionary]" = weakref.WeakKeyDictionary()
"""Merged Control-LoRAs: per Control-LoRA, per UNet (weakly), per ``patches_uuid``."""


def _check_unet(model, control: LoadedControlNet, node_id: str) -> None:
    kind = model_family(model)
    if kind != "unet":
        refuse_other_family(kind, model_name(model), control, node_id)


def _check_context(model, control: LoadedControlNet, node_id: str) -> None:
    """Raise unless the control was made for this UNet's context width and (SDXL) y vector."""
    unet = model.model.model_config.unet_config
    cfg = control.net.config
    same_y = (unet.get("adm_in_channels") is None) == (cfg.adm_in_channels is None)
    if unet.get("context_dim") != cfg.context_dim or not same_y:
        name = model_name(model)
        raise NodeInputError(
            node_id, "controlnet",
            f"'{control.name}' is a {cfg.family.upper()} ControlNet (context {cfg.context_dim}, "
            f"{'with' if cfg.adm_in_channels else 'no'} SDXL y vector) but the model is {name} (context "
            f"{unet.get('context_dim')}, {'with' if unet.get('adm_in_channels') else 'no'} y vector); load a "
            f"ControlNet made for {name}")


def _controlnet_binding(control: LoadedControlNet, **fields) -> FamilyBinding:
    cfg = control.net.config
    num_down = cfg.num_down_residuals
    return FamilyBinding(
        control=control,
        scales_rule=lambda strength, mode, soft_base, weights: block_scales(num_down, strength, mode, soft_base,
                                                                            weights),
        takes_y=cfg.adm_in_channels is not None,
        **fields,
    )


def bind_controlnet(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A classic ControlNet (or a Union with its types) on a UNet MODEL."""
    _check_unet(model, control, node_id)
    _check_context(model, control, node_id)
    return _controlnet_binding(control)


def bind_union(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A ControlNet Union whose types CNR_UnionType chose."""
    if not control.control_type:
        raise NodeInputError(node_id, "controlnet", f"'{control.name}' is a ControlNet Union: choose its control "
                             "type(s) with CNR_UnionType between the loader and this node")
    return bind_controlnet(model, control, node_id)


def bind_control_lora(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Control-LoRA, checked against this MODEL's UNet now and completed with its weights at sampling start.

    ComfyUI's ``ControlLora`` reads the UNet's weights when sampling starts, after the sampled clone's own
    patches (LoRAs) are in; so does this binding (``complete``). The shared UNet at Apply time may still hold
    the patches of another clone sampled before. Merges are cached per Control-LoRA, UNet and set of patches
    (ComfyUI's ``patches_uuid``), so a MODEL sampled again reuses its merge.
    """
    _check_unet(model, control, node_id)
    _check_context(model, control, node_id)
    unet = model.model.diffusion_model
    dtype, device = compat.model_dtype(model), comfy.model_management.unet_offload_device()
    shapes = {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in unet.state_dict().items()}
    try:
        # Keys and shapes do not depend on the patches: any misfit is found here, without a byte of data.
        outline = control.net.merge(shapes, dtype=dtype, device="meta")
    except ControlNetFormatError as e:
        raise NodeInputError(node_id, "controlnet", f"Control-LoRA '{control.name}': {e}") from None
    pending, patches = control.net, getattr(model, "patches_uuid", None)

    def complete() -> LoadedControlNet:
        per_patches = _MERGED.setdefault(pending, weakref.WeakKeyDictionary()).setdefault(unet, {})
        merged = per_patches.get(patches)
        if merged is None:
            merged = wrap_controlnet(pending.merge(unet.state_dict(), dtype=dtype, device=device), control.name)
            per_patches[patches] = merged
        return replace(merged, control_type=control.control_type, extra_hints=control.extra_hints)

    return _controlnet_binding(replace(control, net=outline), complete=complete)


def bind_t2i_adapter(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A T2I-Adapter whose features have the channels of the UNet blocks they are added after."""
    _check_unet(model, control, node_id)
    unet = model.model.model_config.unet_config
    cfg = control.net.config
    mults = list(unet.get("channel_mult") or ())
    levels = [unet.get("model_channels", 0) * m for m in mults]
    fits = (levels + levels[-1:] if cfg.family == "sdxl" else levels) == list(cfg.channels)
    if not fits or (cfg.family == "sdxl") != (unet.get("adm_in_channels") is not None):
        name = model_name(model)
        raise NodeInputError(
            node_id, "controlnet",
            f"'{control.name}' is a {cfg.family.upper()} T2I-Adapter (features of "
            f"{', '.join(map(str, cfg.channels))} channels) but the model is {name} (levels of "
            f"{', '.join(map(str, levels))} channels); load a T2I-Adapter made for {name}")
    count = control.net.num_residuals
    return FamilyBinding(
        control=control,
        scales_rule=lambda strength, mode, soft_base, weights: feature_scales(count, strength, mode, weights),
    )
