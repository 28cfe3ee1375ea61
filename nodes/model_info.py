"""What a MODEL is, as the control nodes need to know it: its family, name, widths and pixel grid."""
from __future__ import annotations

from typing import Literal, Optional

from ..controlnet_core.family import VAE_DOWNSCALE

ModelFamily = Literal["unet", "flux", "sd3", "qwen_image", "z_image"]


def model_family(model) -> ModelFamily:
    """``"flux"``, ``"sd3"``, ``"qwen_image"``, ``"z_image"`` or ``"unet"`` from the MODEL's diffusion model (its
    block lists)."""
    dm = model.model.diffusion_model
    if hasattr(dm, "double_blocks") and hasattr(dm, "single_blocks"):
        return "flux"
    if hasattr(dm, "joint_blocks"):
        return "sd3"
    # Qwen-Image's dual-stream blocks beside its text RMS norm and image patch embedder (ComfyUI's
    # QwenImageTransformer2DModel); other transformer_blocks models lack one of these.
    if all(hasattr(dm, name) for name in ("transformer_blocks", "txt_norm", "img_in", "pe_embedder")):
        return "qwen_image"
    # Z-Image's NextDiT: caption and noise refiners beside the main layers, and pad tokens (Lumina 2, the
    # same class without them, reads other widths and no Z-Image ControlNet fits it).
    if all(hasattr(dm, name) for name in ("noise_refiner", "context_refiner", "layers", "x_pad_token")):
        return "z_image"
    return "unet"


def model_name(model) -> str:
    """The MODEL's ComfyUI config class name (e.g. ``SD15``, ``SDXL``, ``Flux``), for messages."""
    return type(model.model.model_config).__name__


def image_token_width(model) -> Optional[int]:
    """The width of a transformer MODEL's image tokens; None for UNets."""
    dm = model.model.diffusion_model
    family = model_family(model)
    if family == "flux":
        return dm.hidden_size
    if family == "sd3":
        return dm.x_embedder.proj.out_channels
    if family == "qwen_image":
        return dm.img_in.out_features
    if family == "z_image":
        return dm.dim
    return None


def text_width(model) -> Optional[int]:
    """The width of the text tokens the MODEL reads (its context embedder's input); None if unknown."""
    dm = model.model.diffusion_model
    embedder = getattr(dm, "txt_in", None)
    if embedder is None:
        embedder = getattr(dm, "context_embedder", None)
    weight = getattr(embedder, "weight", None)
    return None if weight is None else int(weight.shape[1])


def pixel_grid(model) -> int:
    """Image pixels per side of one step of the MODEL's token grid: the VAE's 8 times the transformer's
    (integer) patch size (Flux, SD3 and Qwen-Image: 2, so 16); UNets work per latent pixel (8)."""
    patch = getattr(model.model.diffusion_model, "patch_size", None)
    return VAE_DOWNSCALE * patch if isinstance(patch, int) else VAE_DOWNSCALE
