"""Per-family nodes for Flux and SD3 ControlNets: the hint VAE of latent-hint models, Flux union modes."""
from __future__ import annotations

from dataclasses import replace

from ..controlnet_core.families.flux.model import FLUX_UNION_MODES, FluxControlNet
from ..controlnet_core.families.sd3.model import SD3ControlNet
from .base import NodeInputError, category


def _family(net) -> str:
    return getattr(getattr(net, "config", None), "family", "other").upper()


class HintVAE:
    NODE_ID = "CNR_HintVAE"
    DISPLAY_NAME = "ControlNet Hint VAE (CNR)"
    DESCRIPTION = ("Gives a latent-hint ControlNet (Flux InstantX / Shakker-Labs Union, SD3 InstantX, SD3.5) the "
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
            "controlnet": ("CNR_CONTROLNET", {"tooltip": "A Flux or SD3 ControlNet from CNR_ControlNetLoader."}),
            "vae": ("VAE", {"tooltip": "The base model's VAE (16 latent channels for Flux and SD3)."}),
        }}

    def attach(self, controlnet, vae):
        net = controlnet.net
        latent_hint = isinstance(net, SD3ControlNet) or (
            isinstance(net, FluxControlNet) and net.config.hint_input == "latent")
        if not latent_hint:
            kind = "a pixel-hint Flux ControlNet" if isinstance(net, FluxControlNet) else f"a {_family(net)} model"
            raise NodeInputError(self.NODE_ID, "controlnet", f"'{controlnet.name}' is {kind}: it takes the control "
                                 "image itself, not a VAE latent; remove this node")
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
        modes = net.config.num_union_modes if isinstance(net, FluxControlNet) else 0
        if not modes:
            raise NodeInputError(self.NODE_ID, "controlnet", f"'{controlnet.name}' is not a Flux union ControlNet "
                                 f"(a {_family(net)} model without modes); remove this node")
        index = FLUX_UNION_MODES.index(mode)
        if index >= modes:
            raise NodeInputError(self.NODE_ID, "mode", f"'{controlnet.name}' has {modes} modes "
                                 f"({', '.join(FLUX_UNION_MODES[:modes])}); '{mode}' is not one of them")
        return (replace(controlnet, control_type=(index,)),)
