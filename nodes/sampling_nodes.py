"""CNR_Img2ImgStrength: img2img strength on any scheduler, cut as diffusers (or ComfyUI) does."""
from __future__ import annotations

from typing import Dict

import torch

import comfy.samplers

from ..controlnet_core.refine.schedule import StrengthRule, truncate_schedule
from . import compat
from .base import LOG, NodeInputError, category
from .validation import check_inputs

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
