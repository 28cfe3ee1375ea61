"""CNR_PaddedCrop, CNR_PaddedPaste and CNR_ApplyCrop."""
from __future__ import annotations

import os
import uuid
from typing import Literal, Tuple, get_args

import numpy as np
import torch
from PIL import Image, ImageDraw

import comfy.utils
import folder_paths

from ..controlnet_core.refine import crop as crop_ops
from ..controlnet_core.refine.crop import PASTE_MODES, long_side_size, plan_crop, snap
from ..controlnet_core.refine.resample import RESAMPLE_FILTERS, resize
from .base import LOG, category
from .bindings import pixel_grid
from .conversions import bchw_to_image, image_to_bchw, mask_to_b1hw
from .validation import check_broadcast, check_inputs, check_same_size

CATEGORY = category("inpaint")
SizeMode = Literal["width x height", "long side", "native (no resize)"]
SIZE_MODES: Tuple[SizeMode, ...] = get_args(SizeMode)


class PaddedCrop:
    NODE_ID = "CNR_PaddedCrop"
    DISPLAY_NAME = "Padded Crop (CNR)"
    DESCRIPTION = ("Crops around the mask with padding, grown to the target aspect and kept inside the image (as "
                   "diffusers' padding_mask_crop), resized in float. The CNR_CROP output pastes the result back "
                   "with CNR_PaddedPaste and crops control images identically with CNR_ApplyCrop. The node shows "
                   "the input with the mask tinted and the crop box drawn.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "CNR_CROP")
    RETURN_NAMES = ("image", "mask", "crop")
    OUTPUT_TOOLTIPS = ("The crop at the target size.", "The mask, cropped the same way.",
                       "Where the crop came from, for CNR_PaddedPaste and CNR_ApplyCrop.")
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The full image (one, or a batch)."}),
                "mask": ("MASK", {"tooltip": "What to repaint; one mask for all images or one per image."}),
                "padding": ("INT", {"default": 32, "min": 0, "max": 4096, "tooltip":
                                    "Context pixels around the mask's bounding box (before aspect growth)."}),
                "size_mode": (list(SIZE_MODES), {"default": "width x height", "tooltip":
                              "width x height: a fixed output size; long side: keep the region's aspect; native: "
                              "no resize, the box snapped to the multiple."}),
                "width": ("INT", {"default": 512, "min": 8, "max": 16384, "step": 8, "tooltip": "Output width."}),
                "height": ("INT", {"default": 512, "min": 8, "max": 16384, "step": 8, "tooltip": "Output height."}),
                "long_side": ("INT", {"default": 768, "min": 8, "max": 16384, "step": 8, "tooltip":
                                      "Output long side for 'long side' mode."}),
                "multiple": ([8, 16, 32, 64], {"default": 8, "tooltip": "Output sizes snap to this multiple: 8 for "
                             "SD1.x/2.x/SDXL, 16 for Flux and SD3 (a latent pixel is 8 image pixels, a token 2x2 "
                             "latent pixels)."}),
                "filter": (list(RESAMPLE_FILTERS), {"default": "bicubic", "tooltip":
                           "Resampling filter, in float (no 8-bit round trip); antialiased when shrinking."}),
                "paste_mode": (list(PASTE_MODES), {"default": "mask", "tooltip":
                               "What CNR_PaddedPaste blends back: the mask (feathered inward; nothing outside it "
                               "changes) or the whole box (edges feathered)."}),
                "feather": ("INT", {"default": 16, "min": 0, "max": 512, "tooltip":
                                    "Blend ramp width in original pixels, always inside the mask or box."}),
            },
            "optional": {
                "context_mask": ("MASK", {"tooltip": "Extra area to include as context (not repainted)."}),
                "model": ("MODEL", {"tooltip": "The model the crop is sampled with: sizes then snap to at least "
                          "its patch grid in pixels (16 for Flux and SD3), whatever multiple says."}),
            },
        }

    def crop(self, image, mask, padding, size_mode, width, height, long_side, multiple, filter, paste_mode, feather,
             context_mask=None, model=None):
        node = self.NODE_ID
        check_inputs(self, locals())
        grid = 0 if model is None else pixel_grid(model)
        if grid > multiple:
            LOG.info("%s: sizes snap to %d px, the model's patch grid (multiple was %d)", node, grid, multiple)
            multiple = grid
        pixels = image_to_bchw(image, node, "image")
        masks = mask_to_b1hw(mask, node, "mask")[:, 0]
        size = tuple(pixels.shape[-2:])
        context = None if context_mask is None else mask_to_b1hw(context_mask, node, "context_mask")[:, 0]
        for name, m in (("mask", masks), ("context_mask", context)):
            if m is not None:
                check_same_size(node, name, m.shape[-2:], "image", size, "they must be the same size")
                check_broadcast(node, name, m.shape[0], "image", pixels.shape[0])
        if masks.shape[0] > 1 and size_mode != "width x height":
            raise ValueError(f"{node}: per-image masks need one output size for the batch: set size_mode to "
                             "'width x height'")
        if size_mode == "width x height":
            out_size = (snap(height, multiple), snap(width, multiple))
        elif size_mode == "long side":
            union = masks[0] if context is None else torch.maximum(masks[0], context[0])
            out_size = long_side_size(union, padding, long_side, multiple)
        else:
            out_size = None
        transform = plan_crop(masks, padding, out_size, multiple, filter, paste_mode, feather, context)
        for i, empty in enumerate(transform.empty):
            if empty:
                LOG.warning("%s: mask %d is empty; the whole image is cropped and paste returns it unchanged", node, i)
        cropped_mask = crop_ops.crop(masks[:, None], transform)
        progress = comfy.utils.ProgressBar(pixels.shape[0])
        cropped = crop_ops.crop(pixels, transform, on_item=lambda i: progress.update(1))
        result = (bchw_to_image(cropped), cropped_mask[:, 0], transform)
        return {"ui": {"images": [save_crop_preview(pixels[0], masks[0], transform.boxes[0])]}, "result": result}


def save_crop_preview(image, mask, box, max_side: int = 256) -> dict:
    """A small PNG of the input with the mask tinted and the crop box drawn, in ComfyUI's temp folder."""
    h, w = image.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    small = resize(image[None], size, "area")[0].clamp(0, 1)
    tint = resize(mask[None, None], size, "area")[0, 0].clamp(0, 1) * 0.45
    small = small * (1 - tint) + torch.tensor([1.0, 0.1, 0.1])[:, None, None] * tint
    picture = Image.fromarray((small.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    x0, y0 = box.x * scale, box.y * scale
    # A box thinner than one preview pixel still gets a (one-pixel) outline.
    ImageDraw.Draw(picture).rectangle((x0, y0, max(x0, x0 + box.w * scale - 1), max(y0, y0 + box.h * scale - 1)),
                                      outline=(40, 255, 80), width=2)
    name = f"cnr_crop_{uuid.uuid4().hex[:12]}.png"
    folder = folder_paths.get_temp_directory()
    os.makedirs(folder, exist_ok=True)
    picture.save(os.path.join(folder, name))
    return {"filename": name, "subfolder": "", "type": "temp"}


class PaddedPaste:
    NODE_ID = "CNR_PaddedPaste"
    DISPLAY_NAME = "Padded Paste (CNR)"
    DESCRIPTION = ("Pastes generated crops back into the original image: resized in float, blended with the crop's "
                   "feathered weights. Every pixel with weight 0 is the original, bit for bit.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The original image with the crop pasted in.",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("IMAGE", {"tooltip": "The image the crop was taken from."}),
                "generated": ("IMAGE", {"tooltip": "The refined crop (any size; resized back to the box)."}),
                "crop": ("CNR_CROP", {"tooltip": "From CNR_PaddedCrop."}),
            },
            "optional": {
                "paste_mask": ("MASK", {"tooltip": "Blend weights at crop resolution (e.g. CNR_InpaintMaskPrep's "
                                                   "paste_mask), used inside the crop's own weights."}),
            },
        }

    def paste(self, original, generated, crop, paste_mask=None):
        node = self.NODE_ID
        base = image_to_bchw(original, node, "original")
        pieces = image_to_bchw(generated, node, "generated")
        weights = None if paste_mask is None else mask_to_b1hw(paste_mask, node, "paste_mask")
        check_same_size(node, "original", base.shape[-2:], "the image the crop was made on", crop.image_size,
                        "connect the image that went into CNR_PaddedCrop as original")
        n = pieces.shape[0]
        check_broadcast(node, "original", base.shape[0], "generated", n)
        check_broadcast(node, "crop", len(crop.boxes), "generated", n)
        if weights is not None:
            check_broadcast(node, "paste_mask", weights.shape[0], "generated", n)
        progress = comfy.utils.ProgressBar(n)
        out = crop_ops.paste(base, pieces, crop, weights, on_item=lambda i: progress.update(1))
        return (bchw_to_image(out).to(original.dtype),)


class ApplyCrop:
    NODE_ID = "CNR_ApplyCrop"
    DISPLAY_NAME = "Apply Crop (CNR)"
    DESCRIPTION = ("Crops another image or mask (e.g. the ControlNet hint) exactly as CNR_PaddedCrop cropped the "
                   "original; images of another size are cropped at the same relative place.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK")
    OUTPUT_TOOLTIPS = ("The image cropped like the original (empty if not connected).",
                       "The mask cropped like the original (empty if not connected).")
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"crop": ("CNR_CROP", {"tooltip": "From CNR_PaddedCrop."})},
                "optional": {"image": ("IMAGE", {"tooltip": "E.g. the control image for the full picture."}),
                             "mask": ("MASK", {"tooltip": "Any mask for the full picture."})}}

    def apply(self, crop, image=None, mask=None):
        node = self.NODE_ID
        pixels = None if image is None else image_to_bchw(image, node, "image")
        masks = None if mask is None else mask_to_b1hw(mask, node, "mask")
        for name, t in (("image", pixels), ("mask", masks)):
            if t is not None:
                check_broadcast(node, "crop", len(crop.boxes), name, t.shape[0])
        out_image = torch.zeros(1, crop.output_size[0], crop.output_size[1], 3)
        out_mask = torch.zeros(1, crop.output_size[0], crop.output_size[1])
        if pixels is not None:
            out_image = bchw_to_image(crop_ops.crop(pixels, crop))
        if masks is not None:
            out_mask = crop_ops.crop(masks, crop)[:, 0]
        return (out_image, out_mask)
