"""The one place the node side lists the families: each control family's binder, by the family's name."""
from __future__ import annotations

from typing import Callable, Dict

from ..control import LoadedControlNet
from .binding import FamilyBinding
from .flux import bind_flux
from .qwen_image import bind_qwen_image
from .sd3 import bind_sd3
from .unet import bind_control_lora, bind_controlnet, bind_t2i_adapter, bind_union
from .z_image import bind_z_image

Binder = Callable[[object, LoadedControlNet, str], FamilyBinding]

BINDERS: Dict[str, Binder] = {
    "controlnet": bind_controlnet,
    "union": bind_union,
    "control_lora": bind_control_lora,
    "t2i_adapter": bind_t2i_adapter,
    "flux": bind_flux,
    "sd3": bind_sd3,
    "qwen_image": bind_qwen_image,
    "z_image": bind_z_image,
}


def bind(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """``control`` checked to fit ``model`` and prepared for it (merged, given the MODEL's embedder or rotary
    split), with what the sampler wrapper needs; raises :class:`~..base.NodeInputError` naming ``node_id``.

    The loaded control is never changed: preparation makes views that share its weights.
    """
    return BINDERS[control.net.family](model, control, node_id)
