"""ComfyUI node layer: thin classes over controlnet_core, and the one registration table."""
from .controlnet_nodes import ApplyControlResiduals, ControlNetLoader

NODE_CONFIG = {
    "CNR_ControlNetLoader": {"class": ControlNetLoader, "name": "Load ControlNet (CNR)"},
    "CNR_ApplyControlResiduals": {"class": ApplyControlResiduals, "name": "Apply ControlNet Residuals (CNR)"},
}

NODE_CLASS_MAPPINGS = {node_id: entry["class"] for node_id, entry in NODE_CONFIG.items()}
NODE_DISPLAY_NAME_MAPPINGS = {node_id: entry["name"] for node_id, entry in NODE_CONFIG.items()}
