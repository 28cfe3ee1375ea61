"""A picture per crop that shows why an edge looks as it does: what the sampler may change, what is pasted, the seam."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .crop import CropTransform
from .harmony import seam_ring
from .resample import resize

__all__ = ["debug_picture"]


def debug_picture(crops: Tensor, crop_masks: Tensor, transform: CropTransform, latent_factor: int = 8,
                  ring_width: int = 16) -> Tensor:
    """Each crop, darkened, with three overlays at crop resolution.

    Red: the sampling mask at latent resolution (bilinear to the latent grid, as ComfyUI's sampler
    scales a noise mask, then shown in blocks of ``latent_factor`` pixels). Green: the paste
    weights. Blue: the seam ring (weight 0 within ``ring_width`` pixels of the pasted area), where
    seam harmony measures the colour drift.

    Args:
        crops: :math:`(K, C, h, w)` the crops (grey or RGB(A); only the first channels are shown).
        crop_masks: :math:`(K, 1, h, w)` each crop's mask.
        transform: the crop transform.
        latent_factor: image pixels per latent pixel.
        ring_width: seam ring width in original pixels.

    Returns:
        :math:`(K, 3, h, w)` in 0..1.
    """
    h, w = crops.shape[-2:]
    base = crops[:, :3] if crops.shape[1] >= 3 else crops[:, :1].expand(-1, 3, -1, -1)
    latent = (max(1, h // latent_factor), max(1, w // latent_factor))
    sampling = F.interpolate(F.interpolate(crop_masks.to(torch.float32), size=latent, mode="bilinear"),
                             size=(h, w), mode="nearest")
    pasted, rings = [], []
    for k in range(crops.shape[0]):
        weights = transform.paste_weights[transform.box_for(k)].to(crops.device, torch.float32)
        pasted.append(resize(weights, (h, w), "bilinear").clamp(0, 1))
        rings.append(resize(seam_ring(weights, ring_width).to(torch.float32), (h, w), "nearest"))
    overlay = torch.cat([sampling, torch.cat(pasted), torch.cat(rings)], dim=1)
    return (0.35 * base.to(torch.float32) + 0.65 * overlay).clamp(0, 1)
