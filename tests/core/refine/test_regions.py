"""Planning crops per region: islands, mask batches, merging, caps, and exact pastes."""
from dataclasses import replace

import pytest
import torch

from cnr_pack.controlnet_core.refine.crop import crop, paste, plan_crop
from cnr_pack.controlnet_core.refine.regions import CropSpec, TooManyRegions, grow_bbox, plan
from cnr_pack.controlnet_core.refine.resample import resize

ISLANDS = ((10, 20, 10, 25), (60, 80, 90, 110), (50, 60, 20, 30))  # y1, y2, x1, x2


def _scene(islands=ISLANDS, h=96, w=128, seed=0):
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    mask = torch.zeros(1, h, w)
    for y1, y2, x1, x2 in islands:
        mask[0, y1:y2, x1:x2] = 1.0
    return image, mask


SPEC = CropSpec(pad=4, output_size=(32, 32), feather=4, regions="islands")


def _alone(transform, k):
    return replace(transform, boxes=(transform.boxes[k],), paste_weights=(transform.paste_weights[k],),
                   empty=(transform.empty[k],), regions=False)


def test_a_mask_with_three_islands_gives_three_crops_of_one_size_in_one_batch():
    image, mask = _scene()
    result = plan(mask, SPEC)
    crops = crop(image, result.transform)
    assert result.found == 3 and crops.shape == (3, 3, 32, 32)
    for (y1, y2, x1, x2), b in zip(sorted(ISLANDS), sorted(result.transform.boxes, key=lambda b: b.y)):
        assert b.x <= x1 and b.y <= y1 and b.x + b.w >= x2 and b.y + b.h >= y2


def test_pasting_every_region_keeps_every_pixel_outside_the_mask_bit_identical():
    image, mask = _scene()
    t = plan(mask, SPEC).transform
    out = paste(image, torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)), t)
    outside = mask[0] == 0
    assert out.shape == image.shape and torch.equal(out[0][:, outside], image[0][:, outside])
    assert not torch.equal(out, image)


def test_each_region_pastes_exactly_as_it_would_alone():
    image, mask = _scene()
    t = plan(mask, SPEC).transform
    generated = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    one_by_one = image
    for k in range(3):
        one_by_one = paste(one_by_one, generated[k:k + 1], _alone(t, k))
    assert torch.equal(paste(image, generated, t), one_by_one)


def test_islands_whose_boxes_overlap_merge_into_one_crop():
    image, mask = _scene(((10, 20, 10, 20), (24, 30, 24, 30), (70, 80, 100, 110)))
    result = plan(mask, SPEC)
    boxes = result.transform.boxes
    assert result.found == 3 and len(boxes) == 2
    assert all(not (a.x < b.x + b.w and b.x < a.x + a.w and a.y < b.y + b.h and b.y < a.y + a.h)
               for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_an_empty_mask_gives_one_empty_crop_that_pastes_back_the_original():
    image, _ = _scene()
    result = plan(torch.zeros(1, 96, 128), SPEC)
    t = result.transform
    assert result.found == 0 and len(t.boxes) == 1 and t.empty == (True,)
    assert torch.equal(paste(image, torch.rand(1, 3, 32, 32), t), image)


def test_more_islands_than_the_cap_is_refused_with_the_count():
    mask = torch.zeros(1, 100, 100)
    mask[0, ::4, ::4] = 1.0  # 625 single-pixel islands
    with pytest.raises(TooManyRegions, match="625 separate regions") as err:
        plan(mask, replace(SPEC, pad=0, output_size=(8, 8), max_regions=64))
    assert err.value.cap == 64


def test_an_island_smaller_than_a_pixel_after_preresize_still_gets_a_crop_holding_it():
    image, mask = _scene(((5, 6, 7, 8), (80, 81, 100, 101)), h=256, w=256)
    result = plan(mask, replace(SPEC, pad=0, preresize="ensure maximum", preresize_max=(32, 32)))
    t = result.transform
    assert t.work_size == (32, 32) and len(t.boxes) == 2
    for k, (y, x) in enumerate(((5, 7), (80, 100))):
        b = t.paste_box(k)
        assert b.x <= x < b.x + b.w and b.y <= y < b.y + b.h
    out = paste(image, torch.rand(2, 3, 32, 32), t)
    assert torch.equal(out[0][:, mask[0] == 0], image[0][:, mask[0] == 0])


def test_a_batch_of_masks_gives_one_crop_per_mask_of_the_one_image():
    image, _ = _scene()
    masks = torch.zeros(2, 96, 128)
    masks[0, 10:20, 10:20] = 1.0
    masks[1, 60:70, 90:100] = 1.0
    result = plan(masks, replace(SPEC, regions="mask batch"))
    crops_of_masks = crop(result.masks[:, None], result.transform)
    assert len(result.transform.boxes) == 2 and crop(image, result.transform).shape == (2, 3, 32, 32)
    assert crops_of_masks[0].sum() > 0 and crops_of_masks[1].sum() > 0


def test_single_mode_plans_exactly_what_plan_crop_plans():
    image, mask = _scene()
    old = plan_crop(mask, 16, (64, 64), feather=6)
    new = plan(mask, CropSpec(pad=16, output_size=(64, 64), feather=6)).transform
    assert old.boxes == new.boxes and torch.equal(crop(image, old), crop(image, new))
    assert all(torch.equal(a, b) for a, b in zip(old.paste_weights, new.paste_weights))


def test_preresize_round_trip_of_an_untouched_crop_returns_the_original_exactly():
    image, mask = _scene()
    t = plan(mask, replace(SPEC, regions="single", preresize="ensure minimum", preresize_min=(300, 300))).transform
    assert t.work_size == (300, 400)
    assert torch.equal(paste(image, crop(image, t), t), image)


def test_preresize_paste_changes_no_pixel_outside_the_mask():
    image, mask = _scene()
    t = plan(mask, replace(SPEC, preresize="ensure minimum", preresize_min=(300, 300))).transform
    out = paste(image, torch.rand(len(t.boxes), 3, 32, 32), t)
    assert torch.equal(out[0][:, mask[0] == 0], image[0][:, mask[0] == 0])


def test_outpaint_extension_pastes_into_the_extended_image_and_keeps_the_original_pixels():
    image, mask = _scene(((40, 50, 40, 50),))
    t = plan(mask, replace(SPEC, regions="single", output_size=(64, 64), extension=(0, 0, 0, 32))).transform
    out = paste(image, torch.rand(1, 3, 64, 64), t)
    assert out.shape == (1, 3, 96, 160) and t.canvas_size == (96, 160)
    assert torch.equal(out[0][:, :, :128][:, mask[0] == 0], image[0][:, mask[0] == 0])
    assert not torch.equal(out[0][:, 10:80, 140:160], image[0][:, 10:80, 127:128].expand(3, 70, 20))


def test_context_factor_grows_each_side_by_cas_rounding():
    # CAS: grow = round(side * (factor - 1) / 2) each way, clamped to the image.
    assert grow_bbox((10, 10, 30, 20), (100, 100), 1.2) == (8, 9, 32, 21)
    assert grow_bbox((0, 90, 50, 100), (100, 100), 2.0) == (0, 85, 75, 100)


def test_the_downscale_filter_is_used_when_the_crop_shrinks():
    image, mask = _scene(((20, 70, 20, 90),))
    spec = CropSpec(pad=0, output_size=(16, 16), filter="bicubic", downscale_filter="nearest")
    t = plan(mask, spec).transform
    b = t.boxes[0]
    expected = resize(image[:, :, b.y:b.y + b.h, b.x:b.x + b.w], (16, 16), "nearest").clamp(0, 1)
    assert torch.equal(crop(image, t), expected)


def test_regions_need_one_output_size():
    _, mask = _scene()
    with pytest.raises(ValueError, match="output size"):
        plan(mask, replace(SPEC, output_size=None))


def test_long_side_takes_the_largest_region_aspect_for_every_crop():
    image, mask = _scene(((10, 20, 10, 50), (60, 64, 100, 104)))
    t = plan(mask, replace(SPEC, output_size=None, long_side=64, multiple=8)).transform
    assert t.output_size == (24, 64)  # the 40x10 island padded by 4: 48x18 -> long side 64
    assert crop(image, t).shape == (2, 3, 24, 64)


def test_a_speckled_mask_with_more_islands_than_can_be_merged_is_refused_quickly():
    mask = torch.zeros(1, 200, 200)
    mask[0, ::2, ::2] = 1.0  # 10000 single-pixel islands
    with pytest.raises(TooManyRegions, match="10000 separate regions .*too many to merge"):
        plan(mask, replace(SPEC, pad=0, output_size=(8, 8)))
