"""Crop region (diffusers parity, properties) and paste exactness."""
import numpy as np
import pytest
import torch
from diffusers.image_processor import VaeImageProcessor
from hypothesis import given, settings, strategies as st
from PIL import Image

from cnr_pack.controlnet_core.refine.crop import (crop, crop_box, diffusers_crop_region, mask_bbox, paste, plan_crop)
from cnr_pack.controlnet_core.refine.resample import resize


def _random_mask(rng, h, w):
    mask = torch.zeros(h, w)
    for _ in range(rng.integers(1, 4)):
        bh, bw = rng.integers(1, h // 2), rng.integers(1, w // 2)
        y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
        mask[y:y + bh, x:x + bw] = float(rng.uniform(0.2, 1.0))
    return mask


def _fits(region, mask, width, height, pad):
    """True when diffusers' aspect growth stayed inside the image (no clamp broke the aspect)."""
    x1, y1, x2, y2 = region
    return abs((x2 - x1) - (y2 - y1) * width / height) <= max(1.0, width / height)


def test_crop_region_equals_diffusers_get_crop_region_on_random_masks():
    rng = np.random.default_rng(0)
    compared = 0
    while compared < 250:
        h, w = int(rng.integers(32, 160)), int(rng.integers(32, 160))
        mask = _random_mask(rng, h, w)
        width, height = int(rng.integers(8, 64)) * 8, int(rng.integers(8, 64)) * 8
        pad = int(rng.integers(0, 24))
        pil = Image.fromarray((mask.numpy() * 255).round().astype(np.uint8), mode="L")
        expected = VaeImageProcessor.get_crop_region(pil, width, height, pad=pad)
        if not _fits(expected, mask, width, height, pad):
            continue
        assert diffusers_crop_region(mask, width, height, pad) == expected
        box = crop_box(mask, pad, (height, width))
        assert (box.x, box.y, box.x + box.w, box.y + box.h) == expected
        compared += 1


masks = st.builds(lambda h, w, boxes: (h, w, boxes), st.integers(16, 96), st.integers(16, 96),
                  st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)),
                           min_size=1, max_size=3))


def _build(spec):
    h, w, boxes = spec
    mask = torch.zeros(h, w)
    for a, b, c, d in boxes:
        y1, y2 = sorted((int(a * (h - 1)), int(b * (h - 1))))
        x1, x2 = sorted((int(c * (w - 1)), int(d * (w - 1))))
        mask[y1:y2 + 1, x1:x2 + 1] = 1.0
    return mask


def _inside_and_contains(box, mask):
    h, w = mask.shape
    x1, y1, x2, y2 = mask_bbox(mask)
    assert 0 <= box.x and 0 <= box.y and box.x + box.w <= w and box.y + box.h <= h
    assert box.x <= x1 and box.y <= y1 and box.x + box.w >= x2 and box.y + box.h >= y2


@settings(max_examples=300, deadline=None)
@given(masks, st.integers(0, 40), st.sampled_from([(512, 512), (512, 768), (768, 512), (384, 640)]))
def test_target_box_lies_inside_contains_mask_and_keeps_aspect_when_possible(spec, pad, target):
    mask = _build(spec)
    box = crop_box(mask, pad, target)
    _inside_and_contains(box, mask)
    th, tw = target
    x1, y1, x2, y2 = mask_bbox(mask)
    h, w = mask.shape
    h_fit = min(h, w * th / tw)
    if h_fit >= y2 - y1 and h_fit * tw / th >= x2 - x1:  # some box of this aspect holds the mask
        assert abs(box.w - box.h * tw / th) <= max(1.0, tw / th) + 1


@settings(max_examples=300, deadline=None)
@given(masks, st.integers(0, 40), st.sampled_from([8, 16, 64]))
def test_native_box_has_the_requested_multiple_where_the_image_allows(spec, pad, multiple):
    mask = _build(spec)
    box = crop_box(mask, pad, None, multiple)
    _inside_and_contains(box, mask)
    h, w = mask.shape
    x1, y1, x2, y2 = mask_bbox(mask)
    for size, limit, extent in ((box.w, w, x2 - x1), (box.h, h, y2 - y1)):
        if limit >= multiple and extent <= limit // multiple * multiple:
            assert size % multiple == 0


@pytest.mark.parametrize("size_mode", ["resized", "native"])
@pytest.mark.parametrize("paste_mode", ["mask", "box"])
def test_pasting_an_untouched_crop_returns_the_input_exactly(size_mode, paste_mode):
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 90, 120, generator=gen)
    mask = torch.zeros(1, 90, 120)
    mask[0, 30:50, 40:70] = 1.0
    transform = plan_crop(mask, 12, (64, 64) if size_mode == "resized" else None, paste_mode=paste_mode)
    out = paste(image, crop(image, transform), transform)
    assert (out - image).abs().max().item() == 0.0


@pytest.mark.parametrize("seed", range(12))
def test_any_generated_crop_leaves_pixels_outside_the_box_bit_identical(seed):
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(40, 200)), int(rng.integers(40, 200))
    image = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))
    mask = _random_mask(rng, h, w)[None]
    paste_mode = ["mask", "box"][seed % 2]
    transform = plan_crop(mask, int(rng.integers(0, 30)), (int(rng.integers(2, 12)) * 8, int(rng.integers(2, 12)) * 8),
                          filter=["bicubic", "lanczos", "bilinear", "area", "nearest"][seed % 5],
                          paste_mode=paste_mode, feather=int(rng.integers(0, 20)))
    generated = torch.rand(1, 3, *transform.output_size, generator=torch.Generator().manual_seed(seed + 100))
    out = paste(image, generated, transform)
    b = transform.boxes[0]
    outside = torch.ones(h, w, dtype=torch.bool)
    outside[b.y:b.y + b.h, b.x:b.x + b.w] = False
    assert torch.equal(out[..., outside], image[..., outside])
    if paste_mode == "mask":
        assert torch.equal(out[..., mask[0] == 0], image[..., mask[0] == 0])
    assert not torch.equal(out, image)


def test_empty_mask_crops_whole_image_and_paste_returns_original():
    image = torch.rand(1, 3, 40, 64)
    transform = plan_crop(torch.zeros(1, 40, 64), 8, (64, 64))
    assert transform.empty == (True,) and tuple(transform.boxes[0]) == (0, 0, 64, 40)
    assert torch.equal(paste(image, torch.rand(1, 3, 64, 64), transform), image)


def test_one_crop_broadcasts_to_a_batch_and_per_image_masks_get_their_own_boxes():
    image = torch.rand(3, 3, 64, 64)
    masks = torch.zeros(3, 64, 64)
    for i in range(3):
        masks[i, 10 * i:10 * i + 8, 5:15] = 1.0
    per_image = plan_crop(masks, 4, (32, 32))
    assert len({b for b in per_image.boxes}) == 3 and crop(image, per_image).shape == (3, 3, 32, 32)
    shared = plan_crop(masks[:1], 4, (32, 32))
    out = paste(image[:1], torch.rand(3, 3, 32, 32), shared)
    assert out.shape == (3, 3, 64, 64)


def test_another_image_of_other_size_is_cropped_at_the_same_relative_place():
    mask = torch.zeros(1, 64, 64)
    mask[0, 16:32, 16:32] = 1.0
    transform = plan_crop(mask, 0, None)
    hint = torch.rand(1, 3, 128, 128)
    b = transform.scaled_box(0, (128, 128))
    assert (b.x, b.y, b.w, b.h) == (32, 32, 32, 32)
    assert torch.equal(crop(hint, transform), resize(hint[..., 32:64, 32:64], (16, 16), "bicubic").clamp(0, 1))


@pytest.mark.parametrize("size", [(1, 1), (6, 9), (3, 2), (63, 95)])
def test_a_box_on_the_bottom_right_edge_stays_inside_a_smaller_image(size):
    mask = torch.zeros(1, 64, 96)
    mask[0, 63, 95] = 1.0
    transform = plan_crop(mask, 0, (64, 64))
    b = transform.scaled_box(0, size)
    assert b.w >= 1 and b.h >= 1 and b.x + b.w <= size[1] and b.y + b.h <= size[0]
    image = torch.full((1, 3, *size), 0.75)
    assert torch.allclose(crop(image, transform), torch.full((1, 3, 64, 64), 0.75), atol=1e-5)
