"""The hint of latent inpainting ControlNets: the masked image's VAE latent with a keep-mask channel appended.

AliMama's SD3 and Flux inpainting ControlNets and InstantX's Qwen-Image Inpainting ControlNet read the same
hint: the image with the region to repaint blacked out, VAE-encoded and scaled like the base model's
latents, then one more channel, the mask at latent size with 1 = keep (``1 - mask``). Flux and Qwen-Image
pack it 2x2 into ``4 * 17 = 68`` features like their latents; the nets' ``embed_hint`` does that.

The path: image and mask in 0..1 at the hint's pixel size -> :func:`masked_pixels` -> the family's VAE
(``2p - 1`` before the encoder, so black is -1) and latent scaling -> :func:`inpaint_control_hint`.

Two rules (:data:`INPAINT_RULES`):

* ``"reference"``, the authors' pipelines (diffusers' ``StableDiffusion3ControlNetInpaintingPipeline`` and
  ``QwenImageControlNetInpaintPipeline``, AliMama's Flux pipeline): the mask is binarised (>= 0.5 -> 1)
  first; the keep channel takes the mask pixel at ``8i`` for latent pixel ``i`` (``F.interpolate``'s
  default ``nearest``).
* ``"comfyui"``, ComfyUI's ``ControlNetInpaintingAliMamaApply``: the soft mask is kept in the keep
  channel, which takes the pixel at ``8i + 4`` (``nearest-exact``); pixels are multiplied by
  ``round(1 - mask)``, which blacks out the same pixels as the reference, but for mask values within
  float32 rounding below 0.5 (0.49999997: ``1 - m`` rounds to 0.5, and ``round`` takes that to 0).
"""
from __future__ import annotations

from typing import Literal, Tuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["INPAINT_RULES", "InpaintRule", "binarised", "inpaint_control_hint", "keep_channel", "masked_pixels"]

InpaintRule = Literal["reference", "comfyui"]
INPAINT_RULES: Tuple[InpaintRule, ...] = get_args(InpaintRule)
_LATENT_SAMPLING = {"reference": "nearest", "comfyui": "nearest-exact"}


def _check(rule: str) -> None:
    if rule not in INPAINT_RULES:
        raise ValueError(f"inpaint rule {rule!r} is not one of {INPAINT_RULES}")


def binarised(mask: Tensor) -> Tensor:
    """``mask`` as diffusers' mask processor leaves it: 1 where it is >= 0.5, else 0.

    Example:
        >>> binarised(torch.tensor([0.2, 0.5, 0.7])).tolist()
        [0.0, 1.0, 1.0]
    """
    return (mask >= 0.5).to(mask.dtype)


def masked_pixels(image: Tensor, mask: Tensor, rule: InpaintRule = "reference") -> Tensor:
    r"""The image with the pixels to repaint set to black (0 here, -1 at the VAE's input).

    Args:
        image: :math:`(B, 3, H, W)` in 0..1.
        mask: :math:`(B \text{ or } 1, 1, H, W)`, 1 = repaint.
        rule: one of :data:`INPAINT_RULES`: reference = black where the binarised mask is 1; comfyui =
            ``image * round(1 - mask)``. Both black out the pixels whose mask is >= 0.5 (and ComfyUI's
            also those a hair below, see the module docstring).

    Returns:
        :math:`(B, 3, H, W)`, a new tensor.
    """
    _check(rule)
    if rule == "comfyui":
        return image * torch.round(1.0 - mask)
    return image.masked_fill(binarised(mask).expand_as(image) > 0.5, 0.0)


def keep_channel(mask: Tensor, size: Tuple[int, int], rule: InpaintRule = "reference") -> Tensor:
    r"""The hint's last channel: ``1 - mask`` at latent size (1 = keep).

    Args:
        mask: :math:`(B, 1, H, W)` at the hint's pixel size, 1 = repaint.
        size: the latent's ``(h, w)``.
        rule: reference = binarised, nearest (pixel ``8i``); comfyui = soft, nearest-exact (pixel ``8i + 4``).

    Returns:
        :math:`(B, 1, h, w)`.

    Example:
        >>> m = torch.tensor([0.0] * 4 + [0.75] * 4).reshape(1, 1, 1, 8)  # one latent pixel: 8 mask pixels
        >>> keep_channel(m, (1, 1)).item(), keep_channel(m, (1, 1), "comfyui").item()
        (1.0, 0.25)
    """
    _check(rule)
    source = binarised(mask) if rule == "reference" else mask
    return 1.0 - F.interpolate(source, size=tuple(size), mode=_LATENT_SAMPLING[rule])


def inpaint_control_hint(latent: Tensor, mask: Tensor, rule: InpaintRule = "reference") -> Tensor:
    r"""The inpainting ControlNet's hint: ``[latent, keep channel]``.

    Args:
        latent: :math:`(B, C, h, w)`, the VAE latent of :func:`masked_pixels`, scaled as the family's latents.
        mask: :math:`(B \text{ or } 1, 1, H, W)` at the hint's pixel size, 1 = repaint.
        rule: one of :data:`INPAINT_RULES` (see :func:`keep_channel`).

    Returns:
        :math:`(B, C + 1, h, w)`; Flux and Qwen-Image pack it 2x2 in the net.
    """
    keep = keep_channel(mask, tuple(latent.shape[-2:]), rule).to(latent)
    return torch.cat([latent, keep.expand(latent.shape[0], -1, -1, -1)], dim=1)
