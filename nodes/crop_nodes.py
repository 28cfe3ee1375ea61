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
from ..controlnet_core.refine.canvas import EXTEND_UNITS, MAX_SIDE, PRERESIZE_MODES, extension_pixels
from ..controlnet_core.refine.crop import PASTE_MODES, snap
from ..controlnet_core.refine.diagnostics import debug_picture
from ..controlnet_core.refine.harmony import HARMONY_MODES, harmonizer
from ..controlnet_core.refine.regions import MAX_REGIONS, REGION_MODES, CropSpec, TooManyRegions, plan
from ..controlnet_core.refine.resample import RESAMPLE_FILTERS, resize
from .base import LOG, NodeInputError, category
from .conversions import bchw_to_image, mask_to_b1hw
from .model_info import pixel_grid
from .validation import check_broadcast, check_finite, check_inputs, check_same_size

CATEGORY = category("inpaint")
SizeMode = Literal["width x height", "long side", "native (no resize)"]
SIZE_MODES: Tuple[SizeMode, ...] = get_args(SizeMode)
SAME_AS_FILTER = "same as filter"
LUMA = (0.299, 0.587, 0.114)  # PIL's RGB -> L weights (ITU-R 601)


def pixels_keeping_channels(image, node: str, name: str) -> torch.Tensor:
    """IMAGE ``[B,H,W,C]`` with C in 1 (grey), 3 (RGB), 4 (RGBA) to ``[B,C,H,W]`` float32, channels kept.

    Crop and paste move pixels and never need RGB, so grey stays grey and alpha is kept (a copy;
    the input is untouched).
    """
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or 0 in image.shape:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise NodeInputError(node, name, f"must be an IMAGE batch [B,H,W,C] with B, H, W >= 1; got {shape}")
    channels = image.shape[-1]
    if channels not in (1, 3, 4):
        raise NodeInputError(node, name, f"has {channels} channels; give a grey (1), RGB (3) or RGBA (4) image")
    check_finite(node, name, image, "pixel values")
    return image.movedim(-1, 1).to(torch.float32, memory_format=torch.contiguous_format, copy=True)


def colour_like(pieces: torch.Tensor, channels: int) -> torch.Tensor:
    """Generated pixels ``[N,C,h,w]`` as the colour channels of an image with ``channels`` channels.

    RGB(A) originals take the generated RGB (grey repeated); grey originals take grey (RGB through
    PIL's luma weights). A generated alpha channel is dropped: the original's alpha is kept.
    """
    colour = pieces[:, :1] if pieces.shape[1] == 1 else pieces[:, :3]
    if channels == 1:
        if colour.shape[1] == 1:
            return colour
        weights = torch.tensor(LUMA, dtype=colour.dtype, device=colour.device)[None, :, None, None]
        return (colour * weights).sum(dim=1, keepdim=True)
    return colour.expand(-1, 3, -1, -1) if colour.shape[1] == 1 else colour


def check_crop_batch(node: str, name: str, crop, n: int) -> None:
    """Raise unless a batch of ``n`` images fits the crop (one per box, one for all, or one per region)."""
    try:
        crop.crops_of(n)
    except ValueError as e:
        regions = len(crop.boxes)
        fix = (f"give 1 image or one per region ({regions})" if crop.regions
               else f"give one {name} for all or exactly {regions}")
        raise NodeInputError(node, name, f"has a batch of {n} but the crop has {regions} "
                                         f"{'regions' if crop.regions else 'boxes'}; {fix}") from e


class PaddedCrop:
    NODE_ID = "CNR_PaddedCrop"
    DISPLAY_NAME = "Padded Crop (CNR)"
    DESCRIPTION = ("Crops around the mask with padding, grown to the target aspect and kept inside the image (as "
                   "diffusers' padding_mask_crop), resized in float. The CNR_CROP output pastes the result back "
                   "with CNR_PaddedPaste and crops control images identically with CNR_ApplyCrop. regions: one crop "
                   "per island of the mask (or per mask of a batch), all at one size in one IMAGE batch, so one "
                   "sampler call refines them all and one paste puts them back. Inpaint-CropAndStitch's options are "
                   "here too: outpaint extension, hole filling, expand, invert, hipass, pre-resize, context factor, "
                   "a downscale filter. The node shows the input with the mask tinted and every crop box drawn; the "
                   "debug output shows, per crop, the sampling mask at latent resolution, the paste weights and "
                   "the seam ring.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE", "MASK", "CNR_CROP", "IMAGE")
    RETURN_NAMES = ("image", "mask", "crop", "debug")
    OUTPUT_TOOLTIPS = ("The crops at the target size (one per image, or one per region), with the input's channels.",
                       "The mask, cropped the same way.",
                       "Where the crops came from, for CNR_PaddedPaste and CNR_ApplyCrop.",
                       "Per crop: red = the sampling mask at latent resolution (8 px blocks), green = the paste "
                       "weights, blue = the seam ring seam harmony measures.")
    FUNCTION = "crop"

    @classmethod
    def INPUT_TYPES(cls):
        filters = list(RESAMPLE_FILTERS)
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The full image (one, or a batch); grey and RGBA keep their channels."}),
                "mask": ("MASK", {"tooltip": "What to repaint; one mask for all images or one per image (regions: "
                                             "one mask split into islands, or a batch of masks for one image)."}),
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
                "filter": (filters, {"default": "bicubic", "tooltip":
                           "Resampling filter, in float (no 8-bit round trip); antialiased when shrinking. Used for "
                           "every resize unless downscale_filter is set (then only where the image grows)."}),
                "paste_mode": (list(PASTE_MODES), {"default": "mask", "tooltip":
                               "What CNR_PaddedPaste blends back: the mask (feathered inward; nothing outside it "
                               "changes) or the whole box (edges feathered)."}),
                "feather": ("INT", {"default": 16, "min": 0, "max": 512, "tooltip":
                                    "Blend ramp width in original pixels, always inside the mask or box."}),
            },
            "optional": {
                "context_mask": ("MASK", {"tooltip": "Extra area to include as context (not repainted)."}),
                "model": ("MODEL", {"tooltip": "The model the crop is sampled with: sizes then snap to at least "
                          "its patch grid in pixels (16 for Flux, SD3 and Qwen-Image), whatever multiple says. In "
                          "native mode a mask that no grid-sized box inside the image holds is refused."}),
                "regions": (list(REGION_MODES), {"default": "single", "tooltip":
                            "single: one crop around the whole mask (per image). islands: one crop per connected "
                            "island of the mask (8-connected). mask batch: one crop per mask of a batch, all from "
                            "one image. Regions whose boxes overlap merge into one crop; all crops share one size "
                            f"and come out as one batch (at most {MAX_REGIONS})."}),
                "mask_fill_holes": ("BOOLEAN", {"default": False, "tooltip":
                                    "Fill holes in the mask (a ring becomes a disc), as Inpaint-CropAndStitch."}),
                "mask_expand": ("INT", {"default": 0, "min": 0, "max": 1024, "tooltip":
                                "Grow the mask by this many pixels (a disc) before anything else uses it."}),
                "mask_invert": ("BOOLEAN", {"default": False, "tooltip": "Repaint everything but the mask (after "
                                "filling and expanding)."}),
                "mask_hipass": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip":
                                "Mask values below this become 0 (Inpaint-CropAndStitch's default is 0.1)."}),
                "context_factor": ("FLOAT", {"default": 1.0, "min": 1.0, "max": 100.0, "step": 0.01, "tooltip":
                                   "Grow each region's bounding box to this factor of its size before padding "
                                   "(Inpaint-CropAndStitch's context_from_mask_extend_factor, default 1.2 there)."}),
                "downscale_filter": ([SAME_AS_FILTER] + filters, {"default": SAME_AS_FILTER, "tooltip":
                                     "Filter for resizes that shrink (crop to a smaller output, paste of a larger "
                                     "crop); 'same as filter' uses filter."}),
                "preresize": (list(PRERESIZE_MODES), {"default": "off", "tooltip":
                              "Plan the crop on the image scaled (aspect kept) to at least the minimum and/or at "
                              "most the maximum size. The paste goes back into the original pixels at the original "
                              "size."}),
                "preresize_min_width": ("INT", {"default": 1024, "min": 8, "max": MAX_SIDE, "tooltip":
                                        "Minimum width for the 'ensure minimum' pre-resize modes."}),
                "preresize_min_height": ("INT", {"default": 1024, "min": 8, "max": MAX_SIDE, "tooltip":
                                         "Minimum height for the 'ensure minimum' pre-resize modes."}),
                "preresize_max_width": ("INT", {"default": MAX_SIDE, "min": 8, "max": MAX_SIDE, "tooltip":
                                        "Maximum width for the 'ensure maximum' pre-resize modes."}),
                "preresize_max_height": ("INT", {"default": MAX_SIDE, "min": 8, "max": MAX_SIDE, "tooltip":
                                         "Maximum height for the 'ensure maximum' pre-resize modes."}),
                "extend_unit": (list(EXTEND_UNITS), {"default": EXTEND_UNITS[0], "tooltip":
                                "How extend_up/down/left/right count: a fraction of that side's length (0.5 = "
                                "Inpaint-CropAndStitch's factor 1.5) or pixels."}),
                **{f"extend_{side}": ("FLOAT", {"default": 0.0, "min": 0.0, "max": float(MAX_SIDE), "step": 0.01,
                                                "tooltip": f"Outpaint: add this much image {where}, filled by "
                                                           "repeating the edge pixels and masked so it is painted. "
                                                           "Paste returns the larger image. 0 = none."})
                   for side, where in (("up", "above"), ("down", "below"), ("left", "on the left"),
                                       ("right", "on the right"))},
            },
        }

    def crop(self, image, mask, padding, size_mode, width, height, long_side, multiple, filter, paste_mode, feather,
             context_mask=None, model=None, regions="single", mask_fill_holes=False, mask_expand=0, mask_invert=False,
             mask_hipass=0.0, context_factor=1.0, downscale_filter=SAME_AS_FILTER, preresize="off",
             preresize_min_width=1024, preresize_min_height=1024, preresize_max_width=MAX_SIDE,
             preresize_max_height=MAX_SIDE, extend_unit=EXTEND_UNITS[0], extend_up=0.0, extend_down=0.0,
             extend_left=0.0, extend_right=0.0):
        node = self.NODE_ID
        check_inputs(self, locals())
        grid = 0 if model is None else pixel_grid(model)
        if grid > multiple:
            LOG.info("%s: sizes snap to %d px, the model's patch grid (multiple was %d)", node, grid, multiple)
            multiple = grid
        pixels = pixels_keeping_channels(image, node, "image")
        masks = mask_to_b1hw(mask, node, "mask")[:, 0]
        size = tuple(pixels.shape[-2:])
        context = None if context_mask is None else mask_to_b1hw(context_mask, node, "context_mask")[:, 0]
        for name, m in (("mask", masks), ("context_mask", context)):
            if m is not None:
                check_same_size(node, name, m.shape[-2:], "image", size, "they must be the same size")
                if regions == "single" or name == "context_mask" and regions == "islands":
                    check_broadcast(node, name, m.shape[0], "image", pixels.shape[0])
        self._check_regions(regions, pixels, masks, context, size_mode)
        if masks.shape[0] > 1 and regions == "single" and size_mode != "width x height":
            raise NodeInputError(node, "size_mode", "per-image masks need one output size for the batch: set "
                                 "size_mode to 'width x height'")
        spec = CropSpec(
            pad=padding, output_size=(snap(height, multiple), snap(width, multiple))
            if size_mode == "width x height" else None, long_side=long_side if size_mode == "long side" else None,
            multiple=multiple, filter=filter, paste_mode=paste_mode, feather=feather, regions=regions,
            downscale_filter=None if downscale_filter == SAME_AS_FILTER else downscale_filter,
            fill_holes=mask_fill_holes, expand=mask_expand, invert=mask_invert, hipass=mask_hipass,
            context_factor=context_factor, extension=self._extension(size, extend_unit, extend_up, extend_down,
                                                                     extend_left, extend_right),
            preresize=preresize, preresize_min=(preresize_min_height, preresize_min_width),
            preresize_max=(preresize_max_height, preresize_max_width))
        try:
            planned = plan(masks, spec, context)
        except TooManyRegions as e:
            raise NodeInputError(node, "mask", f"{e}. Grow the mask (mask_expand) or padding so nearby islands "
                                               "merge, split the image, or use regions 'single'") from e
        except ValueError as e:
            raise NodeInputError(node, "preresize" if "aspect kept" in str(e) else "size_mode", str(e)) from e
        transform = planned.transform
        if grid and size_mode == "native (no resize)":
            self._check_on_grid(transform, grid)
        self._log_empty(transform, regions)
        cropped_mask = crop_ops.crop(planned.masks[:, None], transform)
        progress = comfy.utils.ProgressBar(len(transform.crops_of(pixels.shape[0])))
        cropped = crop_ops.crop(pixels, transform, on_item=lambda i: progress.update(1))
        debug = debug_picture(cropped, cropped_mask, transform)
        result = (bchw_to_image(cropped), cropped_mask[:, 0], transform, bchw_to_image(debug))
        preview = save_crop_preview(transform.canvas(pixels[:1])[0], planned.masks[0],
                                    [transform.paste_box(k) for k in range(len(transform.boxes))])
        return {"ui": {"images": [preview]}, "result": result}

    def _check_regions(self, regions, pixels, masks, context, size_mode) -> None:
        node = self.NODE_ID
        if regions == "single":
            return
        if pixels.shape[0] != 1:
            raise NodeInputError(node, "image", f"has a batch of {pixels.shape[0]}; regions '{regions}' crops one "
                                                "image: give one image, or use regions 'single'")
        if regions == "islands" and masks.shape[0] != 1:
            raise NodeInputError(node, "mask", f"has a batch of {masks.shape[0]}; regions 'islands' splits one mask: "
                                               "give one mask, or use regions 'mask batch'")
        if size_mode == "native (no resize)":
            raise NodeInputError(node, "size_mode", f"is 'native (no resize)'; regions '{regions}' needs one size "
                                                    "for every crop: use 'width x height' or 'long side'")
        if regions == "mask batch" and context is not None:
            check_broadcast(node, "context_mask", context.shape[0], "mask", masks.shape[0])

    def _check_on_grid(self, transform, grid: int) -> None:
        """Raise when a native-size crop of a mask is off the MODEL's patch grid: the box is snapped to the grid
        inside the image unless the image side is under one grid step, or the mask is wider than the largest
        grid-sized box the image holds; a transformer would then sample a padded, shifted token grid."""
        if all(transform.empty):
            return  # the whole image, pasted back unchanged
        h, w = transform.output_size
        if h % grid or w % grid:
            frame_h, frame_w = transform.frame
            raise NodeInputError(self.NODE_ID, "size_mode",
                                 f"is 'native (no resize)' but no {grid}-px-grid box (the model's patch grid) fits "
                                 f"around the mask inside the {frame_w}x{frame_h} image: the crop would be {w}x{h}; "
                                 "use 'width x height' or 'long side' (the crop is resized onto the grid), or "
                                 "extend the image (extend_*)")

    def _extension(self, size, unit, up, down, left, right):
        node = self.NODE_ID
        if unit == "fraction of the side":
            for name, value in (("extend_up", up), ("extend_down", down), ("extend_left", left),
                                ("extend_right", right)):
                if value > 99.0:
                    raise NodeInputError(node, name, f"is {value}; as a fraction of the side it must lie in 0..99 "
                                                     "(Inpaint-CropAndStitch's factors 1..100): lower it, or set "
                                                     "extend_unit to 'pixels'")
        try:
            return extension_pixels(size, (up, down, left, right), unit)
        except ValueError as e:
            raise NodeInputError(node, "extend_up/down/left/right", f"{e}; make the extension smaller") from e

    def _log_empty(self, transform, regions) -> None:
        for i, empty in enumerate(transform.empty):
            if empty and regions == "single":
                LOG.warning("%s: mask %d is empty; the whole image is cropped and paste returns it unchanged",
                            self.NODE_ID, i)
            elif empty:
                LOG.warning("%s: the mask has no region; one crop of the whole image is returned and paste returns "
                            "the image unchanged", self.NODE_ID)


def save_crop_preview(image, mask, boxes, max_side: int = 256) -> dict:
    """A small PNG of the input with the mask tinted and every crop box drawn, in ComfyUI's temp folder."""
    h, w = image.shape[-2:]
    scale = min(1.0, max_side / max(h, w))
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    colour = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    small = resize(colour[None], size, "area")[0].clamp(0, 1)
    tint = resize(mask[None, None].to(small.dtype), size, "area")[0, 0].clamp(0, 1) * 0.45
    small = small * (1 - tint) + torch.tensor([1.0, 0.1, 0.1], device=small.device)[:, None, None] * tint
    picture = Image.fromarray((small.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    for box in boxes:
        x0, y0 = box.x * scale, box.y * scale
        # A box thinner than one preview pixel still gets a (one-pixel) outline.
        draw.rectangle((x0, y0, max(x0, x0 + box.w * scale - 1), max(y0, y0 + box.h * scale - 1)),
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
                   "feathered weights. Every pixel with weight 0 is the original, bit for bit. A crop of regions "
                   "pastes every crop of the batch into the one original. The result keeps the original's channels "
                   "(grey stays grey; RGBA keeps its alpha). Seam harmony (opt-in) matches each crop's colour to "
                   "the original around the pasted area first.")
    CATEGORY = CATEGORY
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("The original image with the crops pasted in (larger by any outpaint extension).",)
    FUNCTION = "paste"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "original": ("IMAGE", {"tooltip": "The image the crop was taken from."}),
                "generated": ("IMAGE", {"tooltip": "The refined crops (any size; resized back to each box): one per "
                                                   "crop of CNR_PaddedCrop's batch."}),
                "crop": ("CNR_CROP", {"tooltip": "From CNR_PaddedCrop."}),
            },
            "optional": {
                "paste_mask": ("MASK", {"tooltip": "Blend weights at crop resolution (e.g. CNR_InpaintMaskPrep's "
                                                   "paste_mask), used inside the crop's own weights."}),
                "harmony": (list(HARMONY_MODES), {"default": "off", "tooltip":
                            "Seam harmony: before blending, shift (mean) or shift and scale (mean and spread) each "
                            "crop's colour channels so that, on the seam ring just outside the pasted area, they "
                            "match the original. Hides a crop's overall colour or exposure drift; pixels that are "
                            "not pasted stay exact."}),
                "harmony_ring": ("INT", {"default": 16, "min": 1, "max": 256, "tooltip":
                                 "Width in original pixels of the ring outside the pasted area that harmony "
                                 "measures."}),
            },
        }

    def paste(self, original, generated, crop, paste_mask=None, harmony="off", harmony_ring=16):
        node = self.NODE_ID
        check_inputs(self, locals())
        base = pixels_keeping_channels(original, node, "original")
        pieces = pixels_keeping_channels(generated, node, "generated")
        weights = None if paste_mask is None else mask_to_b1hw(paste_mask, node, "paste_mask")
        check_same_size(node, "original", base.shape[-2:], "the image the crop was made on", crop.image_size,
                        "connect the image that went into CNR_PaddedCrop as original")
        n = pieces.shape[0]
        if crop.regions:
            if base.shape[0] != 1:
                raise NodeInputError(node, "original", f"has a batch of {base.shape[0]}; a crop of regions pastes "
                                                       "into the one image it was cut from: connect that image")
            if n != len(crop.boxes):
                raise NodeInputError(node, "generated", f"has {n} images but the crop has {len(crop.boxes)} "
                                                        "regions; give one generated image per region (the sampled "
                                                        "crop batch)")
        else:
            check_broadcast(node, "original", base.shape[0], "generated", n)
            check_broadcast(node, "crop", len(crop.boxes), "generated", n)
        if weights is not None:
            check_broadcast(node, "paste_mask", weights.shape[0], "generated", n)
        channels = base.shape[1]
        colour = base[:, :3] if channels == 4 else base
        progress = comfy.utils.ProgressBar(n)
        out = crop_ops.paste(colour, colour_like(pieces, colour.shape[1]), crop, weights,
                             on_item=lambda i: progress.update(1), harmonize=harmonizer(harmony, harmony_ring))
        if channels == 4:
            alpha = crop.canvas(base[:, 3:])
            out = torch.cat([out, alpha.expand(out.shape[0], -1, -1, -1)], dim=1)
        return (bchw_to_image(out).to(original.dtype),)


class ApplyCrop:
    NODE_ID = "CNR_ApplyCrop"
    DISPLAY_NAME = "Apply Crop (CNR)"
    DESCRIPTION = ("Crops another image or mask (e.g. the ControlNet hint) exactly as CNR_PaddedCrop cropped the "
                   "original; images of another size are cropped at the same relative place. For a crop of regions, "
                   "one image gives one crop per region (the per-crop control images for one batched sampler call). "
                   "Images keep their channels.")
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
        pixels = None if image is None else pixels_keeping_channels(image, node, "image")
        masks = None if mask is None else mask_to_b1hw(mask, node, "mask")
        for name, t in (("image", pixels), ("mask", masks)):
            if t is not None:
                check_crop_batch(node, name, crop, t.shape[0])
        out_image = torch.zeros(1, crop.output_size[0], crop.output_size[1], 3)
        out_mask = torch.zeros(1, crop.output_size[0], crop.output_size[1])
        if pixels is not None:
            out_image = bchw_to_image(crop_ops.crop(pixels, crop))
        if masks is not None:
            out_mask = crop_ops.crop(masks, crop)[:, 0]
        return (out_image, out_mask)
