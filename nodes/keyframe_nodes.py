"""CNR_StrengthKeyframe: a chain of strength keyframes for the Apply node (ACN's Timestep Keyframe)."""
from __future__ import annotations

from ..controlnet_core.injection.keyframes import INTERPOLATIONS, Keyframe, KeyframeChain
from ..controlnet_core.injection.latents import parse_latent_strengths
from .base import NodeInputError, category
from .validation import check_inputs

KEYFRAMES_TYPE = "CNR_KEYFRAMES"


class StrengthKeyframe:
    NODE_ID = "CNR_StrengthKeyframe"
    DISPLAY_NAME = "Strength Keyframe (CNR)"
    DESCRIPTION = ("Adds one keyframe to a strength schedule for CNR_ApplyControlResiduals (its 'keyframes' input): "
                   "from start_percent on, the Apply strength is multiplied by this strength. Chain several "
                   "through prev_keyframes. Same rules as ComfyUI-Advanced-ControlNet's Timestep Keyframe: "
                   "guarantee_steps, inherit_missing, per-latent strengths; start_percent follows the Apply "
                   "node's window_timing.")
    CATEGORY = category("controlnet")
    RETURN_TYPES = (KEYFRAMES_TYPE,)
    RETURN_NAMES = ("keyframes",)
    OUTPUT_TOOLTIPS = ("The schedule so far, for the Apply node's keyframes input or the next keyframe.",)
    FUNCTION = "add"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "start_percent": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.001, "tooltip":
                                  "Where this keyframe may start acting, in the Apply node's window timing."}),
                "strength": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0, "step": 0.001, "tooltip":
                             "Multiplies the Apply node's strength while this keyframe acts (0 skips the "
                             "ControlNet's forward there)."}),
                "guarantee_steps": ("INT", {"default": 1, "min": 0, "max": 10000, "tooltip":
                                    "Acts at least this many steps once started, even if the next keyframe has "
                                    "started; 0 lets a later keyframe take over in the same step."}),
                "inherit_missing": ("BOOLEAN", {"default": True, "tooltip":
                                    "Without latent strengths of its own, keep those of the keyframe before "
                                    "(on) or act on every latent alike (off)."}),
                "interpolation": (list(INTERPOLATIONS), {"default": "none", "tooltip":
                                  "linear: ramp the strength step by step to the next keyframe's; none: hold it."}),
            },
            "optional": {
                "prev_keyframes": (KEYFRAMES_TYPE, {"tooltip": "The keyframes before this one (chain them)."}),
                "latent_strengths": ("STRING", {"default": "", "multiline": False, "tooltip":
                                     "Optional per-latent strengths while this keyframe acts, e.g. "
                                     "'0:1.0, 1-3:0.5' or '1.0, 0.5'; latents not listed get "
                                     "null_latent_strength. Empty = none of its own."}),
                "null_latent_strength": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 10.0, "step": 0.001,
                                         "tooltip": "Strength of the latents the latent strengths in effect do "
                                                    "not list (ACN default 0)."}),
            },
        }

    def add(self, start_percent, strength, guarantee_steps, inherit_missing, interpolation, prev_keyframes=None,
            latent_strengths="", null_latent_strength=0.0):
        check_inputs(self, locals())
        if prev_keyframes is not None and not isinstance(prev_keyframes, KeyframeChain):
            raise NodeInputError(self.NODE_ID, "prev_keyframes",
                                 "must be the keyframes output of another keyframe node")
        latents = None
        if latent_strengths.strip():
            try:
                latents = parse_latent_strengths(latent_strengths)
            except ValueError as e:
                raise NodeInputError(self.NODE_ID, "latent_strengths", str(e)) from None
        keyframe = Keyframe(start_percent, strength, guarantee_steps, inherit_missing, latents,
                            null_latent_strength, interpolation)
        return ((prev_keyframes or KeyframeChain()).then(keyframe),)
