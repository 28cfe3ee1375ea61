"""Per-family steps between loading and applying: ControlNet Union types, Control-LoRA merging.

``CNR_UnionType`` chooses the control type(s) of a ControlNet Union. ``prepare_for_model`` is what
the Apply node runs on every ``CNR_CONTROLNET``: it merges a Control-LoRA with the MODEL's UNet
(once per Control-LoRA and UNet; later applies reuse the merged ControlNet) and refuses a Union
whose types were never chosen.
"""
from __future__ import annotations

import weakref
from dataclasses import replace

from ..controlnet_core.families.control_lora.model import ControlLora
from ..controlnet_core.errors import ControlNetFormatError
from ..controlnet_core.families.union.model import UNION_TYPE_NAMES, UnionControlNet
from .adapter import LoadedControlNet, wrap_controlnet
from .base import NodeInputError, category
from .conversions import image_to_bchw

NONE = "none"
_EXTRA_SLOTS = (2, 3)

# ControlLora -> {UNet module -> merged LoadedControlNet}; weak on both sides, so neither the file's
# tensors nor the MODEL are kept alive by the cache.
_MERGED: "weakref.WeakKeyDictionary[ControlLora, weakref.WeakKeyDictionary]" = weakref.WeakKeyDictionary()


class UnionControlType:
    NODE_ID = "CNR_UnionType"
    DISPLAY_NAME = "ControlNet Union Type (CNR)"
    DESCRIPTION = ("Chooses the control type of a ControlNet Union (xinsir controlnet-union-sdxl-1.0: 6 types; "
                   "ProMax: 8) for the Apply node's image. Connect image_2 / image_3 with their types to run two or "
                   "three types in one ControlNet pass (ComfyUI's own Union node runs one type per pass). The "
                   "input is not changed.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = ("CNR_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The same ControlNet Union with the types chosen, for CNR_ApplyControlResiduals.",)
    FUNCTION = "choose"

    @classmethod
    def INPUT_TYPES(cls):
        optional = {}
        for n in _EXTRA_SLOTS:
            optional[f"type_{n}"] = ([NONE, *UNION_TYPE_NAMES], {"default": NONE, "tooltip":
                                     f"Control type of image_{n}; none = no further type."})
            optional[f"image_{n}"] = ("IMAGE", {"tooltip": f"Control image for type_{n}, preprocessed for that "
                                                "type; same size rules as the Apply node's image."})
        return {
            "required": {
                "controlnet": ("CNR_CONTROLNET", {"tooltip": "A ControlNet Union from CNR_ControlNetLoader."}),
                "type": (list(UNION_TYPE_NAMES), {"default": UNION_TYPE_NAMES[3], "tooltip":
                         "Control type of the Apply node's image, in the model's order; tile and repaint "
                         "need the ProMax file."}),
            },
            "optional": optional,
        }

    def choose(self, controlnet, type, type_2=NONE, image_2=None, type_3=NONE, image_3=None):
        node = self.NODE_ID
        net = controlnet.net
        if not isinstance(net, UnionControlNet):
            family = getattr(getattr(net, "config", None), "family", "other").upper()
            raise NodeInputError(node, "controlnet", f"'{controlnet.name}' is a {family} ControlNet, not a ControlNet "
                                 "Union; load a Union file (e.g. controlnet-union-sdxl-1.0) or remove this node")
        types = [self._index(net, controlnet.name, "type", type)]
        hints = []
        for n, name, image in ((2, type_2, image_2), (3, type_3, image_3)):
            if (name == NONE) != (image is None):
                missing = f"image_{n}" if image is None else f"type_{n}"
                raise NodeInputError(node, missing, f"type_{n} and image_{n} go together; connect {missing} or "
                                     f"clear the other one")
            if image is not None:
                types.append(self._index(net, controlnet.name, f"type_{n}", name))
                hints.append(image_to_bchw(image, node, f"image_{n}"))
        return (replace(controlnet, control_type=tuple(types), extra_hints=tuple(hints)),)

    def _index(self, net: UnionControlNet, file: str, input_name: str, name: str) -> int:
        if name not in net.type_names:
            raise NodeInputError(
                self.NODE_ID, input_name,
                f"'{name}' is not in '{file}', a {len(net.type_names)}-type ControlNet Union with "
                f"{', '.join(net.type_names)}; choose one of those or load the ProMax file")
        return net.type_names.index(name)


def prepare_for_model(model, controlnet: LoadedControlNet, node_id: str, dtype, device) -> LoadedControlNet:
    """The control ready to run with ``model``: a Control-LoRA merged with its UNet, a Union checked.

    Args:
        model: the MODEL (a ComfyUI ModelPatcher) the control is applied to.
        controlnet: what the loader (and CNR_UnionType) produced.
        node_id: the calling node, for messages.
        dtype: compute dtype of a merged Control-LoRA.
        device: where a merged Control-LoRA is kept between samplings.
    """
    if isinstance(controlnet.net, ControlLora):
        controlnet = _merged(model, controlnet, node_id, dtype, device)
    if isinstance(controlnet.net, UnionControlNet) and not controlnet.control_type:
        raise NodeInputError(node_id, "controlnet", f"'{controlnet.name}' is a ControlNet Union: choose its control "
                             "type(s) with CNR_UnionType between the loader and this node")
    return controlnet


def _merged(model, controlnet: LoadedControlNet, node_id: str, dtype, device) -> LoadedControlNet:
    unet = model.model.diffusion_model
    per_unet = _MERGED.setdefault(controlnet.net, weakref.WeakKeyDictionary())
    merged = per_unet.get(unet)
    if merged is None:
        try:
            net = controlnet.net.merge(unet.state_dict(), dtype=dtype, device=device)
        except ControlNetFormatError as e:
            raise NodeInputError(node_id, "controlnet", f"Control-LoRA '{controlnet.name}': {e}") from None
        merged = wrap_controlnet(net, controlnet.name)
        per_unet[unet] = merged
    return replace(merged, control_type=controlnet.control_type, extra_hints=controlnet.extra_hints)
