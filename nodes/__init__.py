"""ComfyUI node layer: thin classes over controlnet_core, and the one registration table."""
from .controlnet_nodes import ApplyControlResiduals, ControlNetLoader
from .crop_nodes import ApplyCrop, PaddedCrop, PaddedPaste
from .family_nodes import FluxUnionMode, HintVAE, InpaintControl, QwenFunStrength, UnionControlType
from .inpaint_nodes import InpaintMaskPrep
from .keyframe_nodes import StrengthKeyframe
from .sampling_nodes import Img2ImgStrength

NODE_CLASSES = (
    ControlNetLoader,
    ApplyControlResiduals,
    StrengthKeyframe,
    UnionControlType,
    HintVAE,
    FluxUnionMode,
    InpaintControl,
    QwenFunStrength,
    Img2ImgStrength,
    InpaintMaskPrep,
    PaddedCrop,
    PaddedPaste,
    ApplyCrop,
)

NODE_CLASS_MAPPINGS = {cls.NODE_ID: cls for cls in NODE_CLASSES}
NODE_DISPLAY_NAME_MAPPINGS = {cls.NODE_ID: cls.DISPLAY_NAME for cls in NODE_CLASSES}
