"""Binders of the UNet families: classic ControlNets, ControlNet Union, Control-LoRA and T2I-Adapters.

Each checks the control fits the MODEL's UNet (context width, SDXL y vector, block channels) and returns
its :class:`~.binding.FamilyBinding`; Union checks its types were chosen, Control-LoRA merges with the UNet.
"""
from __future__ import annotations

import weakref
from dataclasses import replace

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


def _check_unet(model, control: LoadedControlNet, node_id: str) -> None:
    kind = model_family(model)
    if kind != "unet":
        refuse_other_family(kind, model_name(model), control, node_id)


def bind_controlnet(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A classic ControlNet (or a Union with its types, or a merged Control-LoRA) on a UNet MODEL."""
    _check_unet(model, control, node_id)
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
    num_down = control.net.config.num_down_residuals
    return FamilyBinding(
        control=control,
        scales_rule=lambda strength, mode, soft_base, weights: block_scales(num_down, strength, mode, soft_base,
                                                                            weights),
        takes_y=cfg.adm_in_channels is not None,
    )


def bind_union(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A ControlNet Union whose types CNR_UnionType chose."""
    if not control.control_type:
        raise NodeInputError(node_id, "controlnet", f"'{control.name}' is a ControlNet Union: choose its control "
                             "type(s) with CNR_UnionType between the loader and this node")
    return bind_controlnet(model, control, node_id)


def bind_control_lora(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Control-LoRA merged with this MODEL's UNet (once per Control-LoRA and UNet), then bound as a ControlNet."""
    _check_unet(model, control, node_id)
    unet = model.model.diffusion_model
    per_unet = _MERGED.setdefault(control.net, weakref.WeakKeyDictionary())
    merged = per_unet.get(unet)
    if merged is None:
        try:
            net = control.net.merge(unet.state_dict(), dtype=compat.model_dtype(model),
                                    device=comfy.model_management.unet_offload_device())
        except ControlNetFormatError as e:
            raise NodeInputError(node_id, "controlnet", f"Control-LoRA '{control.name}': {e}") from None
        merged = wrap_controlnet(net, control.name)
        per_unet[unet] = merged
    return bind_controlnet(model, replace(merged, control_type=control.control_type,
                                          extra_hints=control.extra_hints), node_id)


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
