"""Mask preparation: grow, feather inside, latent downscale rules, masked image."""
import pytest
import torch
import torch.nn.functional as F

from cnr_pack.controlnet_core.refine.masks import binarize, feather_inside, grow, latent_mask, masked_image


def _square(h=64, w=64, top=20, size=16):
    m = torch.zeros(1, 1, h, w)
    m[..., top:top + size, top:top + size] = 1.0
    return m


def test_grow_dilates_by_radius_and_shrink_undoes_it_on_a_square():
    m = _square()
    grown = grow(m, 3)
    assert grown[..., 17:39, 20:36].min() == 1 and grown[..., 16, :].max() == 0
    assert torch.equal(grow(grown, -3), m)


def test_grow_zero_and_empty_masks_are_returned_unchanged():
    m = _square()
    assert torch.equal(grow(m, 0), m) and torch.equal(grow(torch.zeros(1, 1, 8, 8), 4), torch.zeros(1, 1, 8, 8))


def test_erosion_does_not_eat_masks_from_the_image_border():
    m = torch.ones(1, 1, 16, 16)
    assert torch.equal(grow(m, -3), m)


def test_feathered_paste_mask_stays_inside_the_mask_and_reaches_one():
    m = _square(size=32)
    soft = feather_inside(m, 8)
    assert soft[m == 0].max() == 0.0
    assert soft[..., 36, 36] == pytest.approx(1.0, abs=1e-4)
    assert 0.0 < soft[..., 21, 36] < 0.5


def test_binarize_thresholds_and_negative_threshold_keeps_soft_values():
    m = torch.tensor([[[[0.2, 0.5, 0.7]]]])
    assert binarize(m, 0.5).tolist() == [[[[0.0, 0.0, 1.0]]]]
    assert torch.equal(binarize(m, -1), m)


def test_latent_downscale_rules_match_their_sources():
    m = torch.zeros(1, 1, 16, 16)
    m[..., 5, 5] = 1.0  # one pixel in latent cell (0, 0)
    assert latent_mask(m, (2, 2), "any_pixel")[..., 0, 0] == 1.0
    assert torch.equal(latent_mask(m, (2, 2), "nearest"), F.interpolate(m, size=(2, 2)))
    assert torch.equal(latent_mask(m, (2, 2), "bilinear_round"),
                       torch.round(F.interpolate(m, size=(2, 2), mode="bilinear")))


def test_masked_image_fills_grey_under_the_mask_only():
    image = torch.rand(1, 3, 8, 8)
    m = torch.zeros(1, 1, 8, 8)
    m[..., :4, :] = 1.0
    out = masked_image(image, m, "grey")
    assert torch.all(out[..., :4, :] == 0.5) and torch.equal(out[..., 4:, :], image[..., 4:, :])
    assert torch.equal(masked_image(image, m, "original"), image)


@pytest.mark.parametrize("size", [(8, 40), (1, 64), (64, 1), (5, 5)])
def test_radii_beyond_the_image_grow_one_pixel_to_everything_and_erode_one_hole_to_nothing(size):
    one = torch.zeros(1, 1, *size)
    one[..., size[0] // 2, size[1] // 2] = 1.0
    assert torch.equal(grow(one, 256), torch.ones_like(one))
    assert torch.equal(grow(1.0 - one, -256), torch.zeros_like(one))
