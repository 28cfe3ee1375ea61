"""CNR_ControlNetLoader and CNR_ApplyControlResiduals."""
from __future__ import annotations

import os
from typing import Dict

import torch

import comfy.model_management
import folder_paths

from ..controlnet_core import ControlNetFormatError, WeightFileError, load_controlnet
from ..controlnet_core.injection.hint import RESIZE_MODES, inpaint_hint, resize_hint
from ..controlnet_core.injection.keyframes import KeyframeChain, StrengthSchedule
from ..controlnet_core.injection.latents import parse_latent_strengths
from ..controlnet_core.injection.reuse import ResidualReuse
from ..controlnet_core.injection.spec import InjectionSpec
from ..controlnet_core.injection.weighting import A1111_SOFT_BASE, ControlMode, uncond_multiplier_for
from ..controlnet_core.injection.window import ControlWindow, WindowTiming
from . import compat
from .base import NodeInputError, category
from .bindings import bind
from .control import LoadedControlNet, takes_inpaint_mask, wrap_controlnet
from .conversions import image_to_bchw, mask_to_b1hw
from .sampler_wrapper import ResidualInjection
from .validation import BLOCK_WEIGHT_LIMIT, check_batches, check_inputs, check_same_size

CONTROL_MODE_LABELS: Dict[str, ControlMode] = {
    "balanced": "balanced",
    "my prompt is more important": "prompt",
    "controlnet is more important": "controlnet",
}
TIMING_LABELS: Dict[str, WindowTiming] = {
    "executed steps (diffusers)": "executed_steps",
    "model sigma (ComfyUI)": "model_sigma",
}


class ControlNetLoader:
    NODE_ID = "CNR_ControlNetLoader"
    DISPLAY_NAME = "Load ControlNet (CNR)"
    DESCRIPTION = ("Loads a ControlNet (SD1.x, SD2.x or SDXL; original or diffusers layout; .safetensors "
                   "preferred), a ControlNet Union (choose its types with CNR_UnionType), a Control-LoRA (merged "
                   "with the MODEL by the Apply node), a T2I-Adapter (SD1.x full or light, SDXL) or a Flux (InstantX, "
                   "Shakker-Labs Union, XLabs, Mistoline), SD3 / SD3.5, Qwen-Image InstantX or Z-Image Fun "
                   "ControlNet (1.0, 2.1, 2.1-lite; from models/model_patches) for ControlNet Refine's Apply node. "
                   "Architecture and format come from the weights.")
    CATEGORY = category("loaders")
    RETURN_TYPES = ("CNR_CONTROLNET",)
    RETURN_NAMES = ("controlnet",)
    OUTPUT_TOOLTIPS = ("The loaded ControlNet, for CNR_ApplyControlResiduals.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "control_net_name": (control_model_names(),
                                 {"tooltip": "A file in ComfyUI's models/controlnet (or t2i_adapter, or "
                                             "model_patches for Z-Image Fun ControlNets) folder."}),
            "global_average_pooling": ("BOOLEAN", {"default": False, "tooltip":
                                       "Average every residual over the image (shuffle ControlNets need this)."}),
        }}

    def load(self, control_net_name, global_average_pooling=False):
        path = control_model_path(control_net_name)
        if path is None or not os.path.isfile(path):
            raise FileNotFoundError(f"{self.NODE_ID}: control_net_name '{control_net_name}' is not in the "
                                    "controlnet model folder (nor in model_patches); put the file there and refresh")
        dtype = comfy.model_management.unet_dtype()
        try:
            net = load_controlnet(path, dtype=dtype, device=comfy.model_management.unet_offload_device(),
                                  global_pool=global_average_pooling)
        except (ControlNetFormatError, WeightFileError, OSError) as e:
            reason = str(e).removeprefix(f"{path}: ")
            raise NodeInputError(self.NODE_ID, "control_net_name", f"'{control_net_name}' cannot be loaded: "
                                                                   f"{reason}") from None
        # A Control-LoRA stays pending: the Apply node completes it with the MODEL's UNet.
        return (wrap_controlnet(net, control_net_name),)


def _model_folders():
    # ComfyUI files models/t2i_adapter under "controlnet"; a host giving it a key of its own is read too.
    # Z-Image Fun ControlNets live in models/model_patches (ComfyUI's ModelPatchLoader folder).
    folders = [key for key in ("controlnet", "t2i_adapter") if key in folder_paths.folder_names_and_paths]
    return folders + [compat.model_folder("model_patches")]


def control_model_names():
    names = []
    for key in _model_folders():
        names += [n for n in folder_paths.get_filename_list(key) if n not in names]
    return names


def control_model_path(name: str):
    return next((path for key in _model_folders() if (path := folder_paths.get_full_path(key, name))), None)


class ApplyControlResiduals:
    NODE_ID = "CNR_ApplyControlResiduals"
    DISPLAY_NAME = "Apply ControlNet Residuals (CNR)"
    DESCRIPTION = ("Adds a ControlNet's residuals to the MODEL's UNet (skip connections and middle block), or a "
                   "T2I-Adapter's features after its input blocks (computed once per image), or a Flux / SD3 / "
                   "Qwen-Image ControlNet's residuals to the transformer's image tokens after each block, or a "
                   "Z-Image Fun ControlNet's skips after the Z-Image model's refiner blocks and main layers, at "
                   "every step inside the window (inpainting ControlNets: give the mask with CNR_InpaintControl). "
                   "Stack several for multi-ControlNet; ComfyUI's own ControlNets keep working beside it. The input "
                   "MODEL is not changed.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("The model with the ControlNet attached; sample with any sampler.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("MODEL", {"tooltip": "The diffusion model to guide."}),
                "controlnet": ("CNR_CONTROLNET", {"tooltip": "From CNR_ControlNetLoader."}),
                "image": ("IMAGE", {"tooltip": "The control image (hint), e.g. an edge or depth map; for an "
                                               "inpainting ControlNet (CNR_InpaintControl) the image to inpaint. One "
                                               "image for all latents or one per latent."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.01,
                                       "tooltip": "Multiplies every residual (diffusers' conditioning scale)."}),
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                            "tooltip": "Where the control starts acting (see window_timing)."}),
                "end_percent": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.001,
                                          "tooltip": "Where the control stops acting (see window_timing)."}),
                "control_mode": (list(CONTROL_MODE_LABELS), {"default": "balanced", "tooltip":
                                 "As A1111: balanced = plain strength; my prompt is more important = soft curve "
                                 "(deep blocks stronger); controlnet is more important = soft curve on the "
                                 "conditional pass only (diffusers guess mode)."}),
                "resize_mode": (list(RESIZE_MODES), {"default": "crop", "tooltip":
                                "How the image fits the latent: crop = cover and centre-crop (ComfyUI, A1111 default); "
                                "stretch = ignore aspect; fill = fit inside, pad with black."}),
                "window_timing": (list(TIMING_LABELS), {"default": "executed steps (diffusers)", "tooltip":
                                  "executed steps: start/end are fractions of the steps actually run, so img2img "
                                  "windows cover the truncated schedule (diffusers, A1111); model sigma: fractions "
                                  "of the model's whole noise range (ComfyUI's ControlNet)."}),
            },
            "optional": {
                "mask": ("MASK", {"tooltip": "Where the control acts (1) or not (0), any size; resampled to each "
                                             "block. Unconnected = everywhere."}),
                "soft_base": ("FLOAT", {"default": A1111_SOFT_BASE, "min": 0.0, "max": 1.0, "step": 0.0001,
                                        "tooltip": "Base of the soft curve: 0.825 as A1111; 0.8254 (10^(-1/12)) "
                                                   "matches diffusers guess mode exactly."}),
                "uncond_multiplier": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                      "Multiplies the residuals on the unconditional (negative) pass; 0 skips the "
                                      "ControlNet there. Forced to 0 by 'controlnet is more important'."}),
                "inpaint_mask": ("MASK", {"tooltip": "For inpaint ControlNets (control_v11p_sd15_inpaint): the "
                                          "image's pixels under this mask become -1, as A1111 feeds them."}),
                "block_weights": ("STRING", {"default": "", "multiline": False, "tooltip":
                                  "Optional per-block multipliers, comma-separated: 12 down + 1 middle for "
                                  "SD1.x/2.x, 9 + 1 for SDXL, one per feature (4) for T2I-Adapters; shallow "
                                  "to deep. Flux: one per ControlNet double block, then per single block; SD3: "
                                  "one per ControlNet block; Z-Image Fun: 2 refiner skips (2.x), then one per control "
                                  "layer. Empty = all 1. Each value within "
                                  f"+-{BLOCK_WEIGHT_LIMIT:g}."}),
                "keyframes": ("CNR_KEYFRAMES", {"tooltip": "A strength schedule from CNR_StrengthKeyframe: its "
                              "strength multiplies this node's strength from each keyframe's start on, read in "
                              "window_timing. Unconnected = constant strength."}),
                "latent_strengths": ("STRING", {"default": "", "multiline": False, "tooltip":
                                     "Optional strength per latent of the batch, e.g. '0:1.0, 1-3:0.5' or "
                                     "'1.0, 0.5, 0.5'; latents not listed get the keyframe's null_latent_strength "
                                     "(0 without keyframes), as ACN's latent keyframes. Overrides the keyframes' "
                                     "own. Empty = every latent alike."}),
                "reuse_every": ("INT", {"default": 1, "min": 1, "max": 10, "tooltip":
                                "Residual reuse: run the ControlNet at every k-th executed step and reuse its "
                                "residuals in between (never across a window edge or keyframe change). "
                                "1 = every step (off)."}),
                "reuse_threshold": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.01, "tooltip":
                                    "Adaptive residual reuse: run the ControlNet again once its input (latent and "
                                    "timestep) has changed by more than this relative amount since the last run "
                                    "(0.5 ran it on 8 of 20 steps in the pack's benchmark). 0 = off; do not combine "
                                    "with reuse_every."}),
            },
        }

    def apply(self, model, controlnet, image, strength, start_percent, end_percent, control_mode, resize_mode,
              window_timing, mask=None, soft_base=A1111_SOFT_BASE, uncond_multiplier=1.0, inpaint_mask=None,
              block_weights="", keyframes=None, latent_strengths="", reuse_every=1, reuse_threshold=0.0):
        node = self.NODE_ID
        check_inputs(self, locals())
        hint = image_to_bchw(image, node, "image")
        mask = None if mask is None else mask_to_b1hw(mask, node, "mask")
        inpaint = None if inpaint_mask is None else mask_to_b1hw(inpaint_mask, node, "inpaint_mask")
        check_batches(node, {"image": hint.shape[0], "mask": None if mask is None else mask.shape[0],
                             "inpaint_mask": None if inpaint is None else inpaint.shape[0]})
        if strength == 0.0:
            return (model,)  # no control at all: the model is returned as it came
        binding = bind(model, controlnet, node)
        if takes_inpaint_mask(controlnet.net):
            hint = with_inpaint_mask(hint, controlnet, inpaint is not None, node)
        mode = CONTROL_MODE_LABELS[control_mode]
        scales = binding.scales(strength, mode, soft_base, block_weights, node)
        sampling = compat.model_sampling(model)
        try:
            window = ControlWindow(start_percent, end_percent, TIMING_LABELS[window_timing],
                                   sampling.percent_to_sigma(start_percent), sampling.percent_to_sigma(end_percent))
        except ValueError as e:
            raise NodeInputError(node, "start_percent/end_percent", str(e)) from None
        if mask is not None and not torch.any(mask):
            return (model,)  # an all-zero mask means no control anywhere: nothing to run
        if inpaint is not None:
            hint = inpaint_hint(hint, resize_hint(inpaint, tuple(hint.shape[-2:]), "stretch"))
        schedule = None
        if keyframes is not None:
            if not isinstance(keyframes, KeyframeChain):
                raise NodeInputError(node, "keyframes", "must come from CNR_StrengthKeyframe")
            schedule = StrengthSchedule(keyframes, window.timing,
                                        tuple(sampling.percent_to_sigma(k.start_percent) for k in keyframes.keyframes))
        latents = None
        if latent_strengths.strip():
            try:
                latents = parse_latent_strengths(latent_strengths)
            except ValueError as e:
                raise NodeInputError(node, "latent_strengths", str(e)) from None
        try:
            reuse = ResidualReuse(reuse_every, reuse_threshold)
        except ValueError as e:
            raise NodeInputError(node, "reuse_every/reuse_threshold", str(e)) from None
        spec = InjectionSpec(hint, scales, uncond_multiplier_for(mode, uncond_multiplier), mask, window, resize_mode,
                             schedule, latents, reuse)
        model = model.clone()
        previous = model.model_options.get("model_function_wrapper")
        injection = ResidualInjection(binding, spec, sampling, previous=previous)
        model.set_model_unet_function_wrapper(injection)
        if binding.install is not None:
            binding.install(model)
        if binding.complete is None:
            # A control completed at sampling start is loaded by the wrapper once it exists.
            compat.attach_additional_model(model, binding.control.patcher)
        compat.on_sampling_end(model, injection.cleanup)
        return (model,)


def with_inpaint_mask(image: torch.Tensor, control: LoadedControlNet, apply_mask_given: bool,
                      node: str) -> torch.Tensor:
    """The image to inpaint :math:`(B, 3, H, W)` with the mask of ``CNR_InpaintControl`` as a fourth channel,
    so that the sampler wrapper fits both to the latent together (the binding has checked the mask is there)."""
    if apply_mask_given:
        raise NodeInputError(node, "inpaint_mask", f"'{control.name}' is a latent inpainting ControlNet: it takes its "
                             "mask from CNR_InpaintControl, not from this input (which blacks out pixels for "
                             "control_v11p_sd15_inpaint); disconnect inpaint_mask and connect the mask there")
    mask = mask_to_b1hw(control.inpaint_mask, "CNR_InpaintControl", "mask")
    check_same_size(node, "image", tuple(image.shape[-2:]), "the mask of CNR_InpaintControl",
                    tuple(mask.shape[-2:]), "give the mask of this image (same width and height)")
    batch = check_batches(node, {"image": image.shape[0], "mask of CNR_InpaintControl": mask.shape[0]})
    return torch.cat([image.expand(batch, -1, -1, -1), mask.expand(batch, -1, -1, -1)], dim=1)
