"""Per-family nodes between loading and applying: what a family needs beyond the Apply node's inputs.

``CNR_UnionType`` chooses the control type(s) of a ControlNet Union, ``CNR_HintVAE`` gives a latent-hint
ControlNet (Flux, SD3, Qwen-Image, Z-Image) its VAE, ``CNR_FluxUnionMode`` chooses a Flux union model's mode,
``CNR_InpaintControl`` gives an inpainting ControlNet its mask (and a Fun ControlNet its inpaint image),
``CNR_QwenFunStrength`` chooses a Qwen-Image Fun ControlNet's strength curve. Each returns the same
``CNR_CONTROLNET`` with its choice; none changes its input.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict

from ..controlnet_core.families.flux.model import FLUX_UNION_MODES
from ..controlnet_core.injection.inpaint_hint import InpaintRule
from ..controlnet_core.families.union.model import UNION_TYPE_NAMES, UnionControlNet
from . import compat
from .base import NodeInputError, category
from .control import takes_inpaint_mask, takes_inpaint_parts
from .conversions import image_to_bchw, mask_to_b1hw
from .validation import check_batches, check_inputs, check_same_size

NONE = "none"
_EXTRA_SLOTS = (2, 3)

# ControlLora -> {UNet module -> merged LoadedControlNet}; weak on both sides, so neither the file's
# tensors nor the MODEL are kept alive by the cache.

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
        check_inputs(self, locals())
        net = controlnet.net
        if net.family != "union":
            raise NodeInputError(node, "controlnet", f"'{controlnet.name}' is a {_family(net)} ControlNet, not a "
                                 "ControlNet Union; load a Union file (e.g. controlnet-union-sdxl-1.0) or remove "
                                 "this node")
        types = [self._index(net, controlnet.name, "type", type)]
        hints, batches = [], {}
        for n, name, image in ((2, type_2, image_2), (3, type_3, image_3)):
            if (name == NONE) != (image is None):
                missing = f"image_{n}" if image is None else f"type_{n}"
                raise NodeInputError(node, missing, f"type_{n} and image_{n} go together; connect {missing} or "
                                     f"clear the other one")
            if image is not None:
                types.append(self._index(net, controlnet.name, f"type_{n}", name))
                hints.append(image_to_bchw(image, node, f"image_{n}"))
                batches[f"image_{n}"] = hints[-1].shape[0]
        check_batches(node, batches)
        return (replace(controlnet, control_type=tuple(types), extra_hints=tuple(hints)),)

    def _index(self, net: UnionControlNet, file: str, input_name: str, name: str) -> int:
        if name not in net.type_names:
            raise NodeInputError(
                self.NODE_ID, input_name,
                f"'{name}' is not in '{file}', a {len(net.type_names)}-type ControlNet Union with "
                f"{', '.join(net.type_names)}; choose one of those or load the ProMax file")
        return net.type_names.index(name)


def _family(net) -> str:
    return getattr(getattr(net, "config", None), "family", "other").upper()


class HintVAE:
    NODE_ID = "CNR_HintVAE"
    DISPLAY_NAME = "ControlNet Hint VAE (CNR)"
    DESCRIPTION = ("Gives a latent-hint ControlNet (Flux InstantX / Shakker-Labs Union, SD3 InstantX, SD3.5, "
                   "Qwen-Image InstantX and Fun, Z-Image Fun) the "
                   "VAE that encodes its control image during sampling, as ComfyUI's Apply ControlNet node's vae "
                   "input does. Pixel-hint models (XLabs, Mistoline) do not need it. The input is not changed.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = ("CNR_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The same ControlNet with its hint VAE, for CNR_ApplyControlResiduals.",)
    FUNCTION = "attach"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "controlnet": ("CNR_CONTROLNET",
                           {"tooltip": "A Flux, SD3, Qwen-Image or Z-Image ControlNet from CNR_ControlNetLoader."}),
            "vae": ("VAE", {"tooltip": "The base model's VAE (16 latent channels for Flux, SD3, Qwen-Image and "
                                       "Z-Image)."}),
        }}

    def attach(self, controlnet, vae):
        net = controlnet.net
        if getattr(net, "hint_input", None) != "latent":
            kind = "a pixel-hint Flux ControlNet" if net.family == "flux" else f"a {_family(net)} model"
            raise NodeInputError(self.NODE_ID, "controlnet", f"'{controlnet.name}' is {kind}: it takes the control "
                                 "image itself, not a VAE latent; remove this node")
        channels, scale = getattr(vae, "latent_channels", None), compat.vae_downscale(vae)
        if channels is not None and channels != net.config.in_channels:
            raise NodeInputError(self.NODE_ID, "vae", f"this VAE makes {channels}-channel latents but "
                                 f"'{controlnet.name}' reads {net.config.in_channels}-channel ones; connect the VAE "
                                 f"of the {_family(net)} model it was made for")
        if scale != net.hint_size(1, 1)[0]:
            raise NodeInputError(self.NODE_ID, "vae", f"this VAE shrinks images {scale}x but '{controlnet.name}' "
                                 f"needs {net.hint_size(1, 1)[0]}x latents; connect the VAE of the "
                                 f"{_family(net)} model")
        return (replace(controlnet, hint_vae=vae),)


class FluxUnionMode:
    NODE_ID = "CNR_FluxUnionMode"
    DISPLAY_NAME = "Flux ControlNet Union Mode (CNR)"
    DESCRIPTION = ("Chooses the mode of a Flux union ControlNet (InstantX Union, Shakker-Labs Union Pro) with the "
                   "models' own names: canny 0, tile 1, depth 2, blur 3, pose 4, gray 5, low quality 6 (ComfyUI's "
                   "SetUnionControlNetType lists the SDXL union's names, wrong for these). The input is not "
                   "changed.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = ("CNR_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The same ControlNet with the mode chosen, for CNR_ApplyControlResiduals.",)
    FUNCTION = "choose"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "controlnet": ("CNR_CONTROLNET", {"tooltip": "A Flux union ControlNet from CNR_ControlNetLoader."}),
            "mode": (list(FLUX_UNION_MODES), {"default": FLUX_UNION_MODES[0], "tooltip":
                     "What the control image shows, by the model's own mode names (index order)."}),
        }}

    def choose(self, controlnet, mode):
        net = controlnet.net
        check_inputs(self, locals())
        modes = net.config.num_union_modes if net.family == "flux" else 0
        if not modes:
            raise NodeInputError(self.NODE_ID, "controlnet", f"'{controlnet.name}' is not a Flux union ControlNet "
                                 f"(a {_family(net)} model without modes); remove this node")
        index = FLUX_UNION_MODES.index(mode)
        if index >= modes:
            raise NodeInputError(self.NODE_ID, "mode", f"'{controlnet.name}' has {modes} modes "
                                 f"({', '.join(FLUX_UNION_MODES[:modes])}); '{mode}' is not one of them")
        return (replace(controlnet, control_type=(index,)),)


INPAINT_RULE_LABELS: Dict[str, InpaintRule] = {
    "reference (binary mask, nearest, SD3 shift)": "reference",
    "ComfyUI (soft mask, nearest-exact, no SD3 shift)": "comfyui",
}
"""The hint rules of :class:`InpaintControl` by label (see controlnet_core/injection/inpaint_hint.py)."""


class InpaintControl:
    NODE_ID = "CNR_InpaintControl"
    DISPLAY_NAME = "ControlNet Inpaint Mask (CNR)"
    DESCRIPTION = ("Gives an inpainting ControlNet the mask of the region to repaint. Latent inpainting ControlNets "
                   "(AliMama SD3 / Flux inpainting beta, InstantX Qwen-Image Inpainting): the Apply node's image "
                   "is then the image to inpaint; masked pixels black, the VAE latent of that image, and 1 - mask "
                   "at latent size as one more channel; the rule chooses the reference's details or those of "
                   "ComfyUI's ControlNetInpaintingAliMamaApply. Fun ControlNets (Qwen-Image 2512 Fun, Z-Image Fun "
                   "2.x): the Apply node's image stays the control image and inpaint_image is the image to "
                   "inpaint, built into the hint as the authors' pipelines do. The input is not changed.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = ("CNR_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The same inpainting ControlNet with its mask, for CNR_ApplyControlResiduals.",)
    FUNCTION = "attach"

    @classmethod
    def INPUT_TYPES(cls):
        labels = list(INPAINT_RULE_LABELS)
        return {"required": {
            "controlnet": ("CNR_CONTROLNET", {"tooltip": "An inpainting ControlNet (SD3, Flux or Qwen-Image) "
                                                         "from CNR_ControlNetLoader or CNR_HintVAE."}),
            "mask": ("MASK", {"tooltip": "The region to repaint (1), the same width and height as the Apply node's "
                                         "image; one mask for all images or one per image."}),
            "rule": (labels, {"default": labels[0], "tooltip":
                     "Latent inpainting ControlNets. reference: the mask is binarised at 0.5 and the mask channel "
                     "takes the mask pixel at 8i (diffusers, the models' authors); SD3 latents are shifted as the "
                     "base model's. ComfyUI: the soft mask is kept, the channel takes pixel 8i + 4, and SD3 latents "
                     "are not shifted, as ControlNetInpaintingAliMamaApply does. Both black out pixels whose mask "
                     "is >= 0.5. Fun ControlNets follow their reference only."}),
        }, "optional": {
            "inpaint_image": ("IMAGE", {"tooltip": "Fun ControlNets only (Qwen-Image 2512 Fun, Z-Image Fun 2.x): the "
                              "image to inpaint, the mask's width and height; its repainted region is blanked "
                              "before encoding. Unconnected: that part of the hint is zeros, as the reference has "
                              "it. Latent inpainting ControlNets take the Apply node's image instead."}),
        }}

    def attach(self, controlnet, mask, rule, inpaint_image=None):
        node = self.NODE_ID
        check_inputs(self, locals())
        net = controlnet.net
        fun = takes_inpaint_parts(net)
        if not fun and not takes_inpaint_mask(net):
            raise NodeInputError(node, "controlnet", f"'{controlnet.name}' ({_family(net)} ControlNet) has no mask "
                                 "channel: it is not an inpainting ControlNet; remove this node, or load an inpainting "
                                 "ControlNet (AliMama SD3 / Flux, InstantX Qwen-Image Inpainting, Qwen-Image 2512 Fun, "
                                 "Z-Image Fun 2.x)")
        checked = mask_to_b1hw(mask, node, "mask")[:, 0]
        if not fun:
            if inpaint_image is not None:
                raise NodeInputError(node, "inpaint_image", f"'{controlnet.name}' inpaints the Apply node's image; "
                                     "disconnect inpaint_image and connect that image to the Apply node")
            return (replace(controlnet, inpaint_mask=checked, inpaint_rule=INPAINT_RULE_LABELS[rule]),)
        if INPAINT_RULE_LABELS[rule] != "reference":
            raise NodeInputError(node, "rule", f"'{controlnet.name}' is a Fun ControlNet, whose hint follows its "
                                 "authors' pipeline; ComfyUI's rule is that of ControlNetInpaintingAliMamaApply; "
                                 "set rule to the reference")
        image = None
        if inpaint_image is not None:
            image = image_to_bchw(inpaint_image, node, "inpaint_image")
            check_same_size(node, "inpaint_image", tuple(image.shape[-2:]), "the mask", tuple(checked.shape[-2:]),
                            "give the mask of this image (same width and height)")
            check_batches(node, {"inpaint_image": image.shape[0], "mask": checked.shape[0]})
        return (replace(controlnet, inpaint_mask=checked, inpaint_image=image),)


class QwenFunStrength:
    NODE_ID = "CNR_QwenFunStrength"
    DISPLAY_NAME = "Qwen-Image Fun ControlNet Strength (CNR)"
    DESCRIPTION = ("Chooses how the Apply node's strength scales a Qwen-Image-2512 Fun ControlNet Union: linearly, as "
                   "the model's reference (VideoX-Fun's control_context_scale) does and as this pack does without "
                   "this node, or by its square root, as ComfyUI's own Apply ControlNet does for these files (the "
                   "same picture as ComfyUI at the same strength). The input is not changed.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = ("CNR_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The same Fun ControlNet with its strength curve, for CNR_ApplyControlResiduals.",)
    FUNCTION = "choose"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "controlnet": ("CNR_CONTROLNET", {"tooltip": "A Qwen-Image Fun ControlNet Union from "
                                              "CNR_ControlNetLoader."}),
            "comfyui_sqrt": ("BOOLEAN", {"default": False, "tooltip":
                             "On: scale by the square root of the strength, as ComfyUI does (strength 0.25 acts "
                             "as 0.5; negative strengths act as 0). Off: scale linearly, as the model's reference "
                             "does."}),
        }}

    def choose(self, controlnet, comfyui_sqrt):
        net = controlnet.net
        check_inputs(self, locals())
        if not getattr(net, "borrows_base_embedders", False):
            raise NodeInputError(self.NODE_ID, "controlnet", f"'{controlnet.name}' is not a Qwen-Image Fun ControlNet "
                                 f"(a {_family(net)} model); remove this node")
        curve = "comfyui_sqrt" if comfyui_sqrt else "linear"
        return (replace(controlnet, net=net.with_config(strength_curve=curve)),)
