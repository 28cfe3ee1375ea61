"""CNR_Img2ImgStrength and CNR_InpaintMaskPrep."""
from __future__ import annotations

from typing import Dict

import torch

import comfy.samplers

from ..controlnet_core.refine import masks as mask_ops
from ..controlnet_core.refine.masks import FILLS, LATENT_DOWNSCALES
from ..controlnet_core.refine.schedule import StrengthRule, truncate_schedule
from . import compat
from .base import LOG, NodeInputError, category
from .conversions import bchw_to_image, image_to_bchw, mask_to_b1hw
from .validation import check_broadcast, check_inputs, check_same_size

STRENGTH_RULE_LABELS: Dict[str, StrengthRule] = {
    "diffusers (strength)": "diffusers",
    "comfyui (denoise)": "comfyui_denoise",
    "round (SplitSigmasDenoise)": "round",
}


class Img2ImgStrength:
    NODE_ID = "CNR_Img2ImgStrength"
    DISPLAY_NAME = "Img2Img Strength Sigmas (CNR)"
    DESCRIPTION = ("Sigmas for img2img at a given strength, for SamplerCustom / SamplerCustomAdvanced: the tail of "
                   "the schedule, cut as diffusers does (int(steps * strength) steps run; on flow-matching models "
                   "such as SD3 and Flux as diffusers' SD3/Flux img2img pipelines, about ceil(steps * strength)), "
                   "or by ComfyUI's denoise rule. Strength 0 samples nothing; 1 runs the whole schedule.")
    CATEGORY = category("sampling")
    RETURN_TYPES = ("SIGMAS", "INT", "FLOAT")
    RETURN_NAMES = ("sigmas", "executed_steps", "start_sigma")
    OUTPUT_TOOLTIPS = ("The executed part of the schedule; connect to SamplerCustom's sigmas.",
                       "How many model steps will run.",
                       "The noise level the init latent gets (the first sigma).")
    FUNCTION = "sigmas"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL", {"tooltip": "The model whose noise schedule is used."}),
            "scheduler": (comfy.samplers.SCHEDULER_NAMES, {"default": "normal", "tooltip": "The sigma schedule."}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000, "tooltip":
                              "Steps of the full schedule (diffusers' num_inference_steps)."}),
            "strength": ("FLOAT", {"default": 0.8, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                   "How much of the image is re-noised: 0 keeps it, 1 starts from pure noise level."}),
            "rule": (list(STRENGTH_RULE_LABELS), {"default": "diffusers (strength)", "tooltip":
                     "diffusers: run the last int(steps*strength) of steps (flow-matching models: diffusers' "
                     "SD3/Flux rule, int(steps - steps*strength) skipped); comfyui: build int(steps/strength) "
                     "steps and run the last steps (KSampler's denoise); round: run round(steps*strength)."}),
        }}

    def sigmas(self, model, scheduler, steps, strength, rule):
        node = self.NODE_ID
        check_inputs(self, locals())
        schedule_of = compat.schedule_function(model, scheduler)

        def full(n: int):
            try:
                return schedule_of(n)
            except Exception as e:  # whatever fails inside ComfyUI's scheduler
                raise NodeInputError(node, "scheduler", f"'{scheduler}' fails for a {n}-step schedule ({e}); use "
                                                        "another scheduler or another step count") from None

        try:
            schedule = truncate_schedule(full, steps, strength, STRENGTH_RULE_LABELS[rule],
                                         flow_matching=compat.is_flow_matching(model))
        except NodeInputError:
            raise
        except ValueError as e:
            raise NodeInputError(node, "strength", str(e)) from None
        if not bool(torch.isfinite(schedule.sigmas).all()):
            shown = [round(v, 4) for v in schedule.sigmas[:4].tolist()]
            raise NodeInputError(node, "scheduler", f"'{scheduler}' returns non-finite sigmas for {steps} steps "
                                                    f"(starting {shown}); use more steps or another scheduler")
        if schedule.executed_steps == 0:
            LOG.info("%s: strength %s runs no step; the sampler returns the latent unchanged", self.NODE_ID, strength)
        return (schedule.sigmas, schedule.executed_steps, schedule.start_sigma)


def _set_conditioning(conditioning, values):
    return [[t[0], dict(t[1], **values)] for t in conditioning]


class InpaintMaskPrep:
    NODE_ID = "CNR_InpaintMaskPrep"
    DISPLAY_NAME = "Inpaint Mask Prep (CNR)"
    DESCRIPTION = ("Prepares inpainting: the latent of the image with a noise mask (only the mask is sampled), the "
                   "processed sampling mask, a separate feathered paste mask that stays inside it, the masked image, "
                   "and conditioning for 9-channel inpaint checkpoints (as InpaintModelConditioning).")
    CATEGORY = category("inpaint")
    RETURN_TYPES = ("LATENT", "MASK", "MASK", "IMAGE", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("latent", "sample_mask", "paste_mask", "masked_image", "positive", "negative")
    OUTPUT_TOOLTIPS = (
        "The encoded image with noise_mask: the sampler changes only the masked part.",
        "The mask that is sampled (after threshold, invert, grow).",
        "The mask to paste with: feathered inward, 0 wherever sample_mask is 0.",
        "The image with masked pixels filled (grey or original).",
        "Positive conditioning with the inpaint-model concat latent and mask (empty if not connected).",
        "Negative conditioning, likewise.",
    )
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image to inpaint; width and height multiples of 8."}),
                "mask": ("MASK", {"tooltip": "1 = repaint. The image's size; one mask or one per image."}),
                "vae": ("VAE", {"tooltip": "Encodes the image and the masked image."}),
                "grow": ("INT", {"default": 0, "min": -256, "max": 256, "tooltip":
                                 "Pixels to dilate (or erode, negative) the mask before sampling."}),
                "feather": ("INT", {"default": 16, "min": 0, "max": 256, "tooltip":
                                    "Width of the paste mask's inward ramp in pixels. Never widens what is sampled."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": -1.0, "max": 1.0, "step": 0.01, "tooltip":
                                        "Mask values above it count as masked; negative keeps a soft mask."}),
                "invert": ("BOOLEAN", {"default": False, "tooltip": "Repaint where the mask is 0 instead."}),
                "fill": (list(FILLS), {"default": "grey", "tooltip":
                         "Masked pixels of masked_image: grey (ComfyUI, diffusers; for 9-channel models at full "
                         "strength) or original."}),
                "latent_downscale": (list(LATENT_DOWNSCALES), {"default": "nearest", "tooltip":
                                     "Mask to latent grid: nearest (diffusers), bilinear_round (ComfyUI), "
                                     "any_pixel (A1111: a cell is masked if any of its 8x8 pixels is)."}),
                "feather_sampling": ("BOOLEAN", {"default": False, "tooltip":
                                     "Also soften the sampling mask with the feather (a soft noise mask)."}),
            },
            "optional": {
                "positive": ("CONDITIONING", {"tooltip": "Gets the inpaint-model concat latent and mask."}),
                "negative": ("CONDITIONING", {"tooltip": "Gets the inpaint-model concat latent and mask."}),
            },
        }

    def prepare(self, image, mask, vae, grow, feather, threshold, invert, fill, latent_downscale, feather_sampling,
                positive=None, negative=None):
        node = self.NODE_ID
        check_inputs(self, locals())
        pixels = image_to_bchw(image, node, "image")
        m = mask_to_b1hw(mask, node, "mask")
        h, w = pixels.shape[-2:]
        check_same_size(node, "mask", m.shape[-2:], "image", (h, w), "resize the mask to the image first")
        if h % 8 or w % 8:
            raise ValueError(f"{node}: image is {w}x{h}; width and height must be multiples of 8 for the VAE "
                             "(crop with CNR_PaddedCrop, which snaps sizes)")
        check_broadcast(node, "mask", m.shape[0], "image", pixels.shape[0])
        grown = mask_ops.grow(mask_ops.binarize(1.0 - m if invert else m, threshold), grow)
        paste = mask_ops.feather_inside(grown, feather)
        sample = paste if feather_sampling else grown
        if not torch.any(sample):
            LOG.warning("%s: the mask is empty; nothing will be sampled", node)
        filled = mask_ops.masked_image(pixels, sample, fill)
        samples = vae.encode(bchw_to_image(pixels)[..., :3])
        noise_mask = mask_ops.latent_mask(sample, tuple(samples.shape[-2:]), latent_downscale)
        outputs = [[], []]
        if positive is not None or negative is not None:
            grey = mask_ops.masked_image(pixels, sample, "grey")
            values = {"concat_latent_image": vae.encode(bchw_to_image(grey)[..., :3]), "concat_mask": sample}
            outputs = [_set_conditioning(c, values) if c is not None else [] for c in (positive, negative)]
        return ({"samples": samples, "noise_mask": noise_mask}, sample[:, 0], paste[:, 0], bchw_to_image(filled),
                *outputs)
