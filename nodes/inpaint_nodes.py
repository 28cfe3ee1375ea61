"""CNR_InpaintMaskPrep: the latent, noise mask, masked image and paste mask of an inpainting run."""
from __future__ import annotations

import torch

from ..controlnet_core.refine import masks as mask_ops
from ..controlnet_core.refine.masks import FILLS, LATENT_DOWNSCALES
from .base import LOG, NodeInputError, category
from .conversions import bchw_to_image, image_to_bchw, mask_to_b1hw
from .validation import check_broadcast, check_inputs, check_same_size


def _set_conditioning(conditioning, values):
    return [[t[0], dict(t[1], **values)] for t in conditioning]


def _encode(vae, image: torch.Tensor) -> torch.Tensor:
    """The VAE latent of an IMAGE batch, one latent per image.

    A VAE with 3-D latents (the Wan-2.1 VAE of Qwen-Image, ``latent_dim == 3``) reads a batch of images as the
    frames of one video; each image is encoded on its own there, as a one-frame latent :math:`(1, C, 1, h, w)`.
    """
    if getattr(vae, "latent_dim", 2) != 3:
        return vae.encode(image)
    return torch.cat([vae.encode(image[i:i + 1]) for i in range(image.shape[0])])


class InpaintMaskPrep:
    NODE_ID = "CNR_InpaintMaskPrep"
    DISPLAY_NAME = "Inpaint Mask Prep (CNR)"
    DESCRIPTION = ("Prepares inpainting: the latent of the image with a noise mask (only the mask is sampled), the "
                   "processed sampling mask, a separate feathered paste mask that stays inside it, the masked image, "
                   "and conditioning for 9-channel inpaint checkpoints (as InpaintModelConditioning).")
    CATEGORY = category("inpaint")
    RETURN_TYPES = ("LATENT", "MASK", "MASK", "IMAGE", "CONDITIONING", "CONDITIONING")
    RETURN_NAMES = ("latent", "sample_mask", "paste_mask", "masked_image", "positive", "negative")
    OUTPUT_TOOLTIPS = (
        "The encoded image with noise_mask: the sampler changes only the masked part.",
        "The mask that is sampled (after threshold, invert, grow).",
        "The mask to paste with: feathered inward, 0 wherever sample_mask is 0.",
        "The image with masked pixels filled (grey or original).",
        "Positive conditioning with the inpaint-model concat latent and mask (empty if not connected).",
        "Negative conditioning, likewise.",
    )
    FUNCTION = "prepare"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The image to inpaint; width and height multiples of 8."}),
                "mask": ("MASK", {"tooltip": "1 = repaint. The image's size; one mask or one per image."}),
                "vae": ("VAE", {"tooltip": "Encodes the image and the masked image. With a video VAE (Wan-2.1, "
                                           "Qwen-Image's VAE) each image of a batch is its own one-frame latent, "
                                           "not a frame of one video."}),
                "grow": ("INT", {"default": 0, "min": -256, "max": 256, "tooltip":
                                 "Pixels to dilate (or erode, negative) the mask before sampling."}),
                "feather": ("INT", {"default": 16, "min": 0, "max": 256, "tooltip":
                                    "Width of the paste mask's inward ramp in pixels. Never widens what is sampled."}),
                "threshold": ("FLOAT", {"default": 0.5, "min": -1.0, "max": 1.0, "step": 0.01, "tooltip":
                                        "Mask values above it count as masked; negative keeps a soft mask."}),
                "invert": ("BOOLEAN", {"default": False, "tooltip": "Repaint where the mask is 0 instead."}),
                "fill": (list(FILLS), {"default": "grey", "tooltip":
                         "Masked pixels of masked_image: grey (ComfyUI, diffusers; for 9-channel models at full "
                         "strength) or original."}),
                "latent_downscale": (list(LATENT_DOWNSCALES), {"default": "nearest", "tooltip":
                                     "Mask to latent grid: nearest (diffusers), bilinear_round (ComfyUI), "
                                     "any_pixel (A1111: a cell is masked if any of its 8x8 pixels is)."}),
                "feather_sampling": ("BOOLEAN", {"default": False, "tooltip":
                                     "Also soften the sampling mask with the feather (a soft noise mask)."}),
            },
            "optional": {
                "positive": ("CONDITIONING", {"tooltip": "Gets the inpaint-model concat latent and mask."}),
                "negative": ("CONDITIONING", {"tooltip": "Gets the inpaint-model concat latent and mask."}),
            },
        }

    def prepare(self, image, mask, vae, grow, feather, threshold, invert, fill, latent_downscale, feather_sampling,
                positive=None, negative=None):
        node = self.NODE_ID
        check_inputs(self, locals())
        pixels = image_to_bchw(image, node, "image")
        m = mask_to_b1hw(mask, node, "mask")
        h, w = pixels.shape[-2:]
        check_same_size(node, "mask", m.shape[-2:], "image", (h, w), "resize the mask to the image first")
        if h % 8 or w % 8:
            raise NodeInputError(node, "image", f"is {w}x{h}; width and height must be multiples of 8 for the VAE "
                                 "(crop with CNR_PaddedCrop, which snaps sizes)")
        check_broadcast(node, "mask", m.shape[0], "image", pixels.shape[0])
        grown = mask_ops.grow(mask_ops.binarize(1.0 - m if invert else m, threshold), grow)
        paste = mask_ops.feather_inside(grown, feather)
        sample = paste if feather_sampling else grown
        if not torch.any(sample):
            LOG.warning("%s: the mask is empty; nothing will be sampled", node)
        filled = mask_ops.masked_image(pixels, sample, fill)
        samples = _encode(vae, bchw_to_image(pixels)[..., :3])
        noise_mask = mask_ops.latent_mask(sample, tuple(samples.shape[-2:]), latent_downscale)
        if samples.ndim == 5:
            # One mask per one-frame latent: ComfyUI reads a 4-D mask beside a 5-D latent as frames of one video.
            noise_mask = noise_mask.unsqueeze(2)
        outputs = [[], []]
        if positive is not None or negative is not None:
            grey = mask_ops.masked_image(pixels, sample, "grey")
            values = {"concat_latent_image": _encode(vae, bchw_to_image(grey)[..., :3]), "concat_mask": sample}
            outputs = [_set_conditioning(c, values) if c is not None else [] for c in (positive, negative)]
        return ({"samples": samples, "noise_mask": noise_mask}, sample[:, 0], paste[:, 0], bchw_to_image(filled),
                *outputs)
