"""Bad input to CNR_PaddedCrop, CNR_PaddedPaste and CNR_ApplyCrop (see tests/bad_input.py)."""
import pytest
import torch

import comfy_host
from bad_input import (APPLY_CROP, CROP, GREY, IMAGE, INF, MASK, NAN, PASTE, PREP_MASK, _rand, _with, case_ids,
                       check_case, refused, safe)

pytestmark = pytest.mark.comfy


# ---- CNR_PaddedCrop ----------------------------------------------------------------------------

def crop_inputs(**overrides):
    return lambda e: {"image": IMAGE, "mask": MASK, "padding": 8, "width": 64, "height": 64, **overrides}


def cropped_to(h, w, check=None):
    def verify(e, out, inputs):
        image, mask, crop = out
        assert image.shape == (1, h, w, 3) and mask.shape == (1, h, w)
        box = crop.boxes[0]
        H, W = inputs["image"].shape[1:3]
        assert box.w >= 1 and box.h >= 1 and 0 <= box.x <= W - box.w and 0 <= box.y <= H - box.h
        if check is not None:
            check(e, out, inputs)
    return verify


def crop_same_as(**overrides):
    def check(e, out, inputs):
        expected = comfy_host.run_node(CROP, **{**inputs, **overrides})
        assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    return check


def box_holds_mask(e, out, inputs):
    box = out[2].boxes[0]
    mask = inputs["mask"]
    assert float(mask[box.y:box.y + box.h, box.x:box.x + box.w].sum()) == float(mask.sum())


CORNER = _with(torch.zeros(64, 96), (63, 95), 1.0)
PER_IMAGE = (MASK.expand(2, 64, 96), IMAGE.repeat(2, 1, 1, 1))  # one mask (and box) per image

CROP_CASES = [
    refused("image with one NaN pixel", CROP, crop_inputs(image=_with(IMAGE, (0, 0, 0, 2), NAN)), "image"),
    refused("mask with NaN", CROP, crop_inputs(mask=_with(MASK, (1, 1), NAN)), "mask"),
    refused("context_mask with inf", CROP, crop_inputs(context_mask=torch.full((64, 96), INF)), "context_mask"),
    refused("image with five channels", CROP, crop_inputs(image=_rand(1, 64, 96, 5)), "image", "5 channels"),
    refused("mask of another size", CROP, crop_inputs(mask=torch.ones(32, 48)), "mask", "48x32", "96x64"),
    refused("mask batch 3 for image batch 2", CROP, crop_inputs(image=IMAGE.repeat(2, 1, 1, 1),
                                                                mask=torch.ones(3, 64, 96)), "mask", "3", "2"),
    refused("context_mask batch 2 for image batch 3", CROP,
            crop_inputs(image=IMAGE.repeat(3, 1, 1, 1), context_mask=torch.ones(2, 64, 96)), "context_mask"),
    refused("width 0 over a link", CROP, crop_inputs(width=0), "width", "8"),
    refused("padding negative over a link", CROP, crop_inputs(padding=-5), "padding"),
    refused("filter unknown", CROP, crop_inputs(filter="sinc"), "filter"),
    safe("grey image is the grey repeated to RGB", CROP, crop_inputs(image=GREY, mask=PREP_MASK),
         cropped_to(64, 64, crop_same_as(image=GREY.repeat(1, 1, 1, 3)))),
    safe("RGBA image is its RGB", CROP, crop_inputs(image=torch.cat([IMAGE, IMAGE[..., :1]], -1)),
         cropped_to(64, 64, crop_same_as(image=IMAGE))),
    safe("1x1 image", CROP, crop_inputs(image=IMAGE[:, :1, :1], mask=torch.ones(1, 1)), cropped_to(64, 64)),
    safe("1x1 image, native size", CROP,
         crop_inputs(image=IMAGE[:, :1, :1], mask=torch.ones(1, 1), size_mode="native (no resize)"), cropped_to(1, 1)),
    safe("1x1 image, long side", CROP,
         crop_inputs(image=IMAGE[:, :1, :1], mask=torch.ones(1, 1), size_mode="long side", long_side=64),
         cropped_to(64, 64)),
    safe("8x4096 strip fully masked", CROP, crop_inputs(image=_rand(1, 8, 4096, 3), mask=torch.ones(8, 4096)),
         cropped_to(64, 64, box_holds_mask)),
    safe("4096x8 strip, long side", CROP,
         crop_inputs(image=_rand(1, 4096, 8, 3), mask=torch.ones(4096, 8), size_mode="long side", long_side=512),
         cropped_to(512, 8, box_holds_mask)),
    safe("mask on the bottom-right pixel", CROP, crop_inputs(mask=CORNER, padding=0),
         cropped_to(64, 64, box_holds_mask)),
    safe("mask painted to the border, feather beyond the image", CROP,
         crop_inputs(mask=torch.ones(64, 96), feather=512), cropped_to(64, 64, box_holds_mask)),
    safe("13x17 image, native size", CROP,
         crop_inputs(image=_rand(1, 13, 17, 3), mask=torch.ones(13, 17), size_mode="native (no resize)"),
         cropped_to(13, 17)),
]


# ---- CNR_PaddedPaste ---------------------------------------------------------------------------

GENERATED = _rand(1, 64, 64, 3, seed=4)


def paste_inputs(**overrides):
    return lambda e: {"original": IMAGE, "generated": GENERATED, "crop": e.crop(), **overrides}


def pasted(check=None):
    """The README's promise: every pixel the crop's weights leave at 0 is the original, bit for bit."""
    def verify(e, out, inputs):
        (image,) = out
        assert image.shape == (1, 64, 96, 3)
        crop, box = inputs["crop"], inputs["crop"].boxes[0]
        weights = torch.zeros(64, 96)
        weights[box.y:box.y + box.h, box.x:box.x + box.w] = crop.paste_weights[0][0, 0]
        assert torch.equal(image[0][weights == 0], IMAGE[0][weights == 0])
        if check is not None:
            check(e, out, inputs)
    return verify


def paste_same_as(**overrides):
    def check(e, out, inputs):
        assert torch.equal(out[0], comfy_host.run_node(PASTE, **{**inputs, **overrides})[0])
    return check


def untouched_is_exact(e, out, inputs):
    assert torch.equal(out[0], IMAGE)


PASTE_CASES = [
    refused("original of another size than the crop's", PASTE, paste_inputs(original=IMAGE[:, :32, :48]), "original",
            "48x32", "96x64", "CNR_PaddedCrop"),
    refused("generated all NaN", PASTE, paste_inputs(generated=torch.full((1, 64, 64, 3), NAN)), "generated"),
    refused("paste_mask with NaN", PASTE, paste_inputs(paste_mask=_with(torch.ones(64, 64), (0, 0), NAN)),
            "paste_mask"),
    refused("paste_mask batch 2 for 3 generated", PASTE,
            paste_inputs(original=IMAGE, generated=GENERATED.repeat(3, 1, 1, 1), paste_mask=torch.ones(2, 64, 64)),
            "paste_mask", "2", "3"),
    refused("original batch 2 for 3 generated", PASTE,
            paste_inputs(original=IMAGE.repeat(2, 1, 1, 1), generated=GENERATED.repeat(3, 1, 1, 1)), "original"),
    refused("crop of 2 boxes for 3 generated", PASTE,
            lambda e: {"original": IMAGE, "generated": GENERATED.repeat(3, 1, 1, 1), "crop": e.crop(*PER_IMAGE)},
            "crop", "2", "3"),
    safe("grey generated is the grey repeated to RGB", PASTE, paste_inputs(generated=GREY),
         pasted(paste_same_as(generated=GREY.repeat(1, 1, 1, 3)))),
    safe("RGBA generated is its RGB", PASTE, paste_inputs(generated=torch.cat([GENERATED, GREY], -1)),
         pasted(paste_same_as(generated=GENERATED))),
    safe("generated of another size", PASTE, paste_inputs(generated=_rand(1, 17, 9, 3)), pasted()),
    safe("untouched crop returns the original exactly", PASTE,
         lambda e: {"original": IMAGE, "generated": comfy_host.run_node(APPLY_CROP, crop=e.crop(), image=IMAGE)[0],
                    "crop": e.crop()}, untouched_is_exact),
]


# ---- CNR_ApplyCrop -----------------------------------------------------------------------------

def apply_crop_inputs(**overrides):
    return lambda e: {"crop": e.crop(), **overrides}


def cropped_to_constant(value, output=0, channels=(3,)):
    """The crop of a constant image or mask is that constant: never empty, never black."""
    def check(e, out, inputs):
        crop = out[output]
        assert crop.shape in [(1, 64, 64, c) for c in channels] + [(1, 64, 64)]
        assert torch.allclose(crop, torch.full_like(crop, value), atol=1e-5)
    return check


APPLY_CROP_CASES = [
    refused("image with NaN", APPLY_CROP, apply_crop_inputs(image=_with(IMAGE, (0, 30, 40, 0), NAN)), "image"),
    refused("mask with inf", APPLY_CROP, apply_crop_inputs(mask=torch.full((64, 96), -INF)), "mask"),
    refused("image with two channels", APPLY_CROP, apply_crop_inputs(image=IMAGE[..., :2]), "image", "2 channels"),
    refused("image batch 3 for a crop of 2 boxes", APPLY_CROP,
            lambda e: {"crop": e.crop(*PER_IMAGE), "image": IMAGE.repeat(3, 1, 1, 1)}, "crop", "2", "3"),
    safe("bottom-right box on a 6x9 image", APPLY_CROP,
         lambda e: {"crop": e.crop(mask=CORNER, padding=0), "image": torch.full((1, 6, 9, 3), 0.75)},
         cropped_to_constant(0.75)),
    safe("bottom-right box on a 1x1 image", APPLY_CROP,
         lambda e: {"crop": e.crop(mask=CORNER, padding=0), "image": torch.full((1, 1, 1, 3), 0.25)},
         cropped_to_constant(0.25)),
    safe("grey image of another size", APPLY_CROP, apply_crop_inputs(image=torch.full((1, 32, 48, 1), 0.5)),
         cropped_to_constant(0.5)),
    safe("mask of another size", APPLY_CROP, apply_crop_inputs(mask=torch.ones(16, 24)),
         cropped_to_constant(1.0, output=1)),
]


CROP_NODE_CASES = CROP_CASES + PASTE_CASES + APPLY_CROP_CASES


@pytest.mark.parametrize("case", CROP_NODE_CASES, ids=case_ids(CROP_NODE_CASES))
def test_bad_crop_and_paste_inputs_are_refused_or_safe(bad_input_env, case):
    check_case(bad_input_env, case)
