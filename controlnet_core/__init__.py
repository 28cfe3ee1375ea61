"""ControlNet Refine core: pure-torch ControlNet residuals, refinement math and crop geometry.

Imports nothing from ComfyUI; usable from plain PyTorch or diffusers code.
"""
from .families.controlnet.config import ControlNetConfig
from .families.controlnet.convert import diffusers_to_original, original_to_diffusers
from .loading.files import WeightFileError, read_state_dict
from .families.flux.model import FLUX_UNION_MODES, FluxControlNet, FluxControlNetConfig, expand_to_base
from .errors import ControlNetFormatError, ControlNetInputError
from .loading.registry import FORMATS, ModelFormat, detect_config, detect_format, load_controlnet
from .families.controlnet.model import ControlNet
from .residuals import ControlResiduals

__all__ = [
    "FLUX_UNION_MODES",
    "FORMATS",
    "ControlNet",
    "ControlNetConfig",
    "ControlNetFormatError",
    "ControlNetInputError",
    "ControlResiduals",
    "FluxControlNet",
    "FluxControlNetConfig",
    "ModelFormat",
    "WeightFileError",
    "detect_config",
    "detect_format",
    "diffusers_to_original",
    "expand_to_base",
    "load_controlnet",
    "original_to_diffusers",
    "read_state_dict",
]
