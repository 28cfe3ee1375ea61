"""ComfyUI node layer: thin classes over controlnet_core, and the one registration table."""
from .controlnet_nodes import ApplyControlResiduals, ControlNetLoader
from .crop_nodes import ApplyCrop, PaddedCrop, PaddedPaste
from .refine_nodes import Img2ImgStrength, InpaintMaskPrep

NODE_CONFIG = {
    "CNR_ControlNetLoader": {"class": ControlNetLoader, "name": "Load ControlNet (CNR)"},
    "CNR_ApplyControlResiduals": {"class": ApplyControlResiduals, "name": "Apply ControlNet Residuals (CNR)"},
    "CNR_Img2ImgStrength": {"class": Img2ImgStrength, "name": "Img2Img Strength Sigmas (CNR)"},
    "CNR_InpaintMaskPrep": {"class": InpaintMaskPrep, "name": "Inpaint Mask Prep (CNR)"},
    "CNR_PaddedCrop": {"class": PaddedCrop, "name": "Padded Crop (CNR)"},
    "CNR_PaddedPaste": {"class": PaddedPaste, "name": "Padded Paste (CNR)"},
    "CNR_ApplyCrop": {"class": ApplyCrop, "name": "Apply Crop (CNR)"},
}

NODE_CLASS_MAPPINGS = {node_id: entry["class"] for node_id, entry in NODE_CONFIG.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: entry["name"] for node_id, entry in NODE_CONFIG.items()}
