"""ControlNet Refine core: pure-torch ControlNet residuals, refinement math and crop geometry.

Imports nothing from ComfyUI; usable from plain PyTorch or diffusers code.
"""
from .config import ControlNetConfig
from .convert import diffusers_to_original, original_to_diffusers
from .files import WeightFileError, read_state_dict
from .flux import FLUX_UNION_MODES, FluxControlNet, FluxControlNetConfig, expand_to_base
from .errors import ControlNetFormatError
from .loading import FORMATS, ModelFormat, detect_config, detect_format, load_controlnet
from .model import ControlNet, ControlNetInputError
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
