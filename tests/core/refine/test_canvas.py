"""Outpaint extension, pre-resize and mask preparation against Inpaint-CropAndStitch's documented rules."""
import math

import numpy as np
import pytest
import torch

from cnr_pack.controlnet_core.refine.canvas import extend, extension_pixels, prepare_mask, preresize_size


def _cas_extension(h, w, up, down, left, right):
    """CAS's extend_imm geometry (factors): new H = int(H (up + down - 1)), top = int(H (up - 1)), the rest below."""
    new_h, new_w = int(h * (up + down - 1.0)), int(w * (left + right - 1.0))
    top, left_px = int(h * (up - 1.0)), int(w * (left - 1.0))
    return top, new_h - h - top, left_px, new_w - w - left_px


@pytest.mark.parametrize("factors", [(1.5, 1.0, 1.0, 1.0), (1.0, 1.25, 1.33, 2.0), (1.1, 1.1, 1.1, 1.1),
                                     (3.0, 1.0, 1.0, 1.7)])
def test_extension_in_fractions_has_cas_geometry_for_its_factors(factors):
    for h, w in ((64, 96), (37, 53), (100, 3)):
        fractions = tuple(f - 1.0 for f in factors)
        assert extension_pixels((h, w), fractions, "fraction of the side") == _cas_extension(h, w, *factors)


def test_extension_in_pixels_adds_exactly_those_pixels():
    assert extension_pixels((64, 96), (8, 0, 3, 16), "pixels") == (8, 0, 3, 16)


def test_extension_is_edge_replicated_including_corners_and_keeps_the_image():
    image = torch.rand(1, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    out = extend(image, (2, 1, 3, 4))
    assert out.shape == (1, 3, 8, 14)
    assert torch.equal(out[:, :, 2:7, 3:10], image)
    assert torch.equal(out[:, :, 0, 0], image[:, :, 0, 0]) and torch.equal(out[:, :, -1, -1], image[:, :, -1, -1])
    assert torch.equal(out[:, :, 0, 3:10], image[:, :, 0]) and torch.equal(out[:, :, 2:7, -1], image[:, :, :, -1])


def test_mask_extension_is_masked():
    mask = torch.zeros(1, 1, 4, 4)
    out = extend(mask, (1, 2, 0, 3), fill=1.0)
    assert out[..., 1:5, 0:4].sum() == 0 and out.sum() == out.numel() - 16


@pytest.mark.parametrize("bad", [(-0.5, 0, 0, 0), (float("nan"), 0, 0, 0), (0, 0, float("inf"), 0)])
def test_negative_or_non_finite_extension_is_refused(bad):
    with pytest.raises(ValueError, match="extension"):
        extension_pixels((64, 64), bad, "fraction of the side")


def test_an_extension_beyond_the_largest_canvas_is_refused():
    with pytest.raises(ValueError, match="16384"):
        extension_pixels((4096, 4096), (3.0, 1.0, 0, 0), "fraction of the side")


def _cas_preresize(w, h, mode, min_w, min_h, max_w, max_h):
    """CAS's preresize_imm sizes, as documented: min -> ceil(scale), max -> int(scale)."""
    if mode == "ensure minimum":
        if w >= min_w and h >= min_h:
            return h, w
        s = max(min_w / w, min_h / h)
        return math.ceil(h * s), math.ceil(w * s)
    if mode == "ensure maximum":
        if w <= max_w and h <= max_h:
            return h, w
        s = min(max_w / w, max_h / h)
        return int(h * s), int(w * s)
    if min_w <= w <= max_w and min_h <= h <= max_h:
        return h, w
    up, down = max(min_w / w, min_h / h), min(max_w / w, max_h / h)
    s = up if up > 1 else down
    return (math.ceil(h * s), math.ceil(w * s)) if s >= 1 else (int(h * s), int(w * s))


@pytest.mark.parametrize("mode", ["ensure minimum", "ensure maximum", "ensure minimum and maximum"])
def test_preresize_sizes_equal_cas_rule(mode):
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(16, 3000, 2))
        mn = (int(rng.integers(16, 1500)), int(rng.integers(16, 1500)))
        mx = (mn[0] + int(rng.integers(0, 2000)), mn[1] + int(rng.integers(0, 2000)))
        try:
            expected = _cas_preresize(w, h, mode, mn[1], mn[0], mx[1], mx[0])
        except ZeroDivisionError:
            continue
        up, down = max(mn[0] / h, mn[1] / w), min(mx[0] / h, mx[1] / w)
        if mode == "ensure minimum and maximum" and up > 1 and down < 1:
            with pytest.raises(ValueError, match="aspect"):
                preresize_size((h, w), mode, mn, mx)
            continue
        assert preresize_size((h, w), mode, mn, mx) == expected


def test_preresize_off_keeps_the_size():
    assert preresize_size((123, 45), "off", (1024, 1024), (2048, 2048)) == (123, 45)


def test_hipass_zeroes_values_below_the_threshold_only():
    mask = torch.tensor([[[0.05, 0.1, 0.5, 1.0]]])
    assert torch.equal(prepare_mask(mask, hipass=0.1), torch.tensor([[[0.0, 0.1, 0.5, 1.0]]]))


def test_invert_comes_after_expand_as_in_cas():
    mask = torch.zeros(1, 9, 9)
    mask[0, 4, 4] = 1.0
    out = prepare_mask(mask, expand=2, invert=True)
    yy, xx = torch.meshgrid(torch.arange(9), torch.arange(9), indexing="ij")
    inside = (yy - 4) ** 2 + (xx - 4) ** 2 <= 2 * 2 + 2  # the disc of radius 2 the grow rule uses
    assert torch.equal(out[0] == 0, inside)


def test_expand_grows_every_pixel_within_the_radius():
    mask = torch.zeros(1, 31, 31)
    mask[0, 15, 15] = 1.0
    out = prepare_mask(mask, expand=6)
    yy, xx = torch.meshgrid(torch.arange(31.0), torch.arange(31.0), indexing="ij")
    dist = ((yy - 15) ** 2 + (xx - 15) ** 2).sqrt()
    assert bool((out[0][dist <= 6] == 1).all()) and bool((out[0][dist > 7] == 0).all())


def test_mask_preparation_leaves_its_input_unchanged():
    mask = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(1))
    copy = mask.clone()
    prepare_mask(mask, fill=True, expand=2, invert=True, hipass=0.3)
    assert torch.equal(mask, copy)
