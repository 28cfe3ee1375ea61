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


def cropped_to(h, w, check=None, channels=3, crops=1):
    def verify(e, out, inputs):
        image, mask, crop, debug = out
        assert image.shape == (crops, h, w, channels) and mask.shape == (crops, h, w)
        assert debug.shape == (crops, h, w, 3)
        H, W = crop.frame
        for box in crop.boxes:
            assert box.w >= 1 and box.h >= 1 and 0 <= box.x <= W - box.w and 0 <= box.y <= H - box.h
        if check is not None:
            check(e, out, inputs)
    return verify


def crop_same_as(**overrides):
    def check(e, out, inputs):
        expected = comfy_host.run_node(CROP, **{**inputs, **overrides})
        assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    return check


def first_channels_same_as(alpha_is_channel_0=False, **overrides):
    """The crop's colour channels equal the crop of ``overrides``' RGB; alpha (channel 3) is cropped as channel 0."""
    def check(e, out, inputs):
        expected = comfy_host.run_node(CROP, **{**inputs, **overrides})[0]
        channels = out[0].shape[-1]
        assert torch.equal(out[0][..., :min(channels, 3)], expected[..., :min(channels, 3)])
        if alpha_is_channel_0:
            assert torch.equal(out[0][..., 3], out[0][..., 0])
    return check


def box_holds_mask(e, out, inputs):
    box = out[2].boxes[0]
    mask = inputs["mask"]
    assert float(mask[box.y:box.y + box.h, box.x:box.x + box.w].sum()) == float(mask.sum())


CORNER = _with(torch.zeros(64, 96), (63, 95), 1.0)
GRID_MASK = torch.zeros(64, 96)
GRID_MASK[::3, ::3] = 1.0  # 22 x 32 separate pixels
THREE_ISLANDS = torch.zeros(64, 96)
THREE_ISLANDS[2:8, 2:8] = THREE_ISLANDS[50:60, 40:46] = THREE_ISLANDS[5:9, 84:94] = 1.0


def all_empty(e, out, inputs):
    assert all(out[2].empty)


def canvas_is(h, w):
    def check(e, out, inputs):
        assert out[2].canvas_size == (h, w)
    return check


def paste_box_holds_mask(e, out, inputs):
    mask = inputs["mask"]
    for k in range(len(out[2].boxes)):
        box = out[2].paste_box(k)
        assert float(mask[box.y:box.y + box.h, box.x:box.x + box.w].sum()) == float(mask.sum())
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
    safe("grey image stays grey", CROP, crop_inputs(image=GREY, mask=PREP_MASK),
         cropped_to(64, 64, first_channels_same_as(image=GREY.repeat(1, 1, 1, 3)), channels=1)),
    safe("RGBA image keeps its alpha", CROP, crop_inputs(image=torch.cat([IMAGE, IMAGE[..., :1]], -1)),
         cropped_to(64, 64, first_channels_same_as(image=IMAGE, alpha_is_channel_0=True), channels=4)),
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
    refused("704 islands, beyond the cap of 64", CROP,
            crop_inputs(mask=GRID_MASK, regions="islands", padding=0, width=8, height=8), "mask", "704", "64",
            "mask_expand"),
    refused("regions on an image batch of 2", CROP, crop_inputs(image=IMAGE.repeat(2, 1, 1, 1), regions="islands"),
            "image", "2"),
    refused("islands of a mask batch of 2", CROP, crop_inputs(mask=MASK.expand(2, 64, 96), regions="islands"),
            "mask", "mask batch"),
    refused("regions at native size", CROP, crop_inputs(regions="islands", size_mode="native (no resize)"),
            "size_mode", "width x height"),
    refused("context_mask batch 2 for a mask batch of 3", CROP,
            crop_inputs(mask=MASK.expand(3, 64, 96), context_mask=torch.ones(2, 64, 96), regions="mask batch"),
            "context_mask", "2", "3"),
    refused("regions unknown", CROP, crop_inputs(regions="all of them"), "regions"),
    refused("extend_up 150 sides", CROP, crop_inputs(extend_up=150.0), "extend_up", "0..99"),
    refused("extend_left negative over a link", CROP, crop_inputs(extend_left=-0.5), "extend_left"),
    refused("extension beyond 16384 px", CROP, crop_inputs(extend_unit="pixels", extend_right=16384.0),
            "extend_", "16384"),
    refused("pre-resize minimum and maximum that cannot both hold", CROP,
            crop_inputs(preresize="ensure minimum and maximum", preresize_max_width=16, preresize_max_height=16),
            "preresize", "aspect"),
    refused("mask_hipass 2 over a link", CROP, crop_inputs(mask_hipass=2.0), "mask_hipass"),
    refused("context_factor 0.5 over a link", CROP, crop_inputs(context_factor=0.5), "context_factor"),
    safe("no island: one empty crop of the whole image", CROP,
         crop_inputs(mask=torch.zeros(64, 96), regions="islands"), cropped_to(64, 64, all_empty)),
    safe("three islands: three crops in one batch", CROP, crop_inputs(mask=THREE_ISLANDS, regions="islands"),
         cropped_to(64, 64, crops=3)),
    safe("island smaller than a pixel after pre-resize", CROP,
         crop_inputs(mask=CORNER, regions="islands", padding=0, preresize="ensure maximum", preresize_max_width=12,
                     preresize_max_height=12), cropped_to(64, 64, paste_box_holds_mask)),
    safe("outpaint all four sides with the mask on the image edge", CROP,
         crop_inputs(mask=CORNER, extend_unit="pixels", extend_up=8.0, extend_down=8.0, extend_left=8.0,
                     extend_right=8.0), cropped_to(64, 64, canvas_is(80, 112))),
    safe("outpaint one side by 99 sides", CROP, crop_inputs(image=IMAGE[:, :8, :8], mask=torch.zeros(8, 8),
                                                           extend_right=99.0), cropped_to(64, 64, canvas_is(8, 800))),
    safe("every CAS option at once", CROP,
         crop_inputs(mask_fill_holes=True, mask_expand=4, mask_hipass=0.1, context_factor=1.2,
                     downscale_filter="area", preresize="ensure minimum", preresize_min_width=128,
                     preresize_min_height=128, extend_up=0.25), cropped_to(64, 64, canvas_is(80, 96))),
]


# ---- CNR_PaddedPaste ---------------------------------------------------------------------------

GENERATED = _rand(1, 64, 64, 3, seed=4)
RGBA = torch.cat([IMAGE, _rand(1, 64, 96, 1, seed=5)], -1)


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


def rgba_kept(e, out, inputs):
    (image,) = out
    assert image.shape == (1, 64, 96, 4) and torch.equal(image[..., 3], RGBA[..., 3])
    rgb = comfy_host.run_node(PASTE, **{**inputs, "original": IMAGE})[0]
    assert torch.equal(image[..., :3], rgb)


def grey_kept(e, out, inputs):
    (image,) = out
    assert image.shape == (1, 64, 96, 1)
    crop, box = inputs["crop"], inputs["crop"].boxes[0]
    weights = torch.zeros(64, 96)
    weights[box.y:box.y + box.h, box.x:box.x + box.w] = crop.paste_weights[0][0, 0]
    assert torch.equal(image[0][weights == 0], IMAGE[0, ..., :1][weights == 0])


def extended_to(h, w):
    def check(e, out, inputs):
        assert out[0].shape == (1, h, w, 3)
        assert torch.equal(out[0][:, :, :96][0][MASK == 0], IMAGE[0][MASK == 0])
    return check


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
    safe("RGBA original keeps its alpha", PASTE, paste_inputs(original=RGBA), rgba_kept),
    safe("grey original stays grey", PASTE, paste_inputs(original=IMAGE[..., :1]), grey_kept),
    refused("2 generated for a crop of 3 regions", PASTE,
            lambda e: {"original": IMAGE, "generated": GENERATED.repeat(2, 1, 1, 1),
                       "crop": e.crop(mask=THREE_ISLANDS, regions="islands")}, "generated", "3 regions"),
    refused("original batch 2 for a crop of regions", PASTE,
            lambda e: {"original": IMAGE.repeat(2, 1, 1, 1), "generated": GENERATED.repeat(3, 1, 1, 1),
                       "crop": e.crop(mask=THREE_ISLANDS, regions="islands")}, "original", "regions"),
    refused("harmony unknown", PASTE, paste_inputs(harmony="auto"), "harmony"),
    safe("harmony keeps every pixel with weight 0", PASTE, paste_inputs(harmony="mean and spread"), pasted()),
    safe("no island pastes back the original", PASTE,
         lambda e: {"original": IMAGE, "generated": GENERATED,
                    "crop": e.crop(mask=torch.zeros(64, 96), regions="islands")}, untouched_is_exact),
    safe("outpainted crop pastes into the larger image", PASTE,
         lambda e: {"original": IMAGE, "generated": GENERATED,
                    "crop": e.crop(extend_unit="pixels", extend_right=16.0)}, extended_to(64, 112)),
]



# ---- CNR_ApplyCrop -----------------------------------------------------------------------------

def apply_crop_inputs(**overrides):
    return lambda e: {"crop": e.crop(), **overrides}


def cropped_to_constant(value, output=0, channels=(3,), batch=1):
    """The crop of a constant image or mask is that constant: never empty, never black."""
    def check(e, out, inputs):
        crop = out[output]
        assert crop.shape in [(batch, 64, 64, c) for c in channels] + [(batch, 64, 64)]
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
    safe("grey image of another size stays grey", APPLY_CROP,
         apply_crop_inputs(image=torch.full((1, 32, 48, 1), 0.5)), cropped_to_constant(0.5, channels=(1,))),
    safe("RGBA hint keeps its alpha", APPLY_CROP, apply_crop_inputs(image=torch.full((1, 64, 96, 4), 0.5)),
         cropped_to_constant(0.5, channels=(4,))),
    safe("one hint for a crop of 3 regions gives 3 crops", APPLY_CROP,
         lambda e: {"crop": e.crop(mask=THREE_ISLANDS, regions="islands"), "image": torch.full((1, 64, 96, 3), 0.5)},
         cropped_to_constant(0.5, batch=3)),
    refused("hint batch 2 for a crop of 3 regions", APPLY_CROP,
            lambda e: {"crop": e.crop(mask=THREE_ISLANDS, regions="islands"), "image": IMAGE.repeat(2, 1, 1, 1)},
            "image", "3 regions"),
    safe("mask of another size", APPLY_CROP, apply_crop_inputs(mask=torch.ones(16, 24)),
         cropped_to_constant(1.0, output=1)),
]


CROP_NODE_CASES = CROP_CASES + PASTE_CASES + APPLY_CROP_CASES


@pytest.mark.parametrize("case", CROP_NODE_CASES, ids=case_ids(CROP_NODE_CASES))
def test_bad_crop_and_paste_inputs_are_refused_or_safe(bad_input_env, case):
    check_case(bad_input_env, case)
