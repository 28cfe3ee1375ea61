"""Seam harmony: a crop's colour drift no longer shows as a step at the mask's edge."""
import torch

from cnr_pack.controlnet_core.refine.crop import crop, paste
from cnr_pack.controlnet_core.refine.harmony import harmonizer, match_seam, seam_ring
from cnr_pack.controlnet_core.refine.regions import CropSpec, plan


def _smooth_scene():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 128), indexing="ij")
    image = torch.stack([0.3 + 0.3 * xx, 0.4 + 0.2 * yy, 0.5 - 0.2 * xx * yy])[None]
    mask = torch.zeros(1, 96, 128)
    mask[0, 30:66, 40:90] = 1.0
    return image, mask


def _border_step(out, image, mask):
    """Mean |change inside - change outside| over horizontally and vertically adjacent pairs across the border."""
    change = (out - image)[0]
    m = mask[0] > 0
    steps = []
    for a, b, ma, mb in ((change[:, :, 1:], change[:, :, :-1], m[:, 1:], m[:, :-1]),
                         (change[:, 1:], change[:, :-1], m[1:], m[:-1])):
        across = ma != mb
        steps.append((a - b).abs()[:, across])
    return float(torch.cat(steps, 1).mean())


def _shifted_paste(mode):
    image, mask = _smooth_scene()
    t = plan(mask, CropSpec(pad=16, output_size=(64, 64), feather=0)).transform
    generated = crop(image, t) + 0.1  # the whole crop drifts, as a sampled crop does
    return paste(image, generated, t, harmonize=harmonizer(mode)), image, mask, t


def test_harmony_cuts_the_step_across_the_mask_border_by_at_least_80_percent():
    off, image, mask, _ = _shifted_paste("off")
    on, *_ = _shifted_paste("mean and spread")
    before, after = _border_step(off, image, mask), _border_step(on, image, mask)
    assert before > 0.05 and after <= 0.2 * before


def test_harmony_off_is_the_plain_paste_bit_for_bit():
    off, image, mask, t = _shifted_paste("off")
    assert torch.equal(off, paste(image, crop(image, t) + 0.1, t))


def test_harmony_leaves_every_pixel_with_weight_0_bit_identical():
    on, image, mask, _ = _shifted_paste("mean and spread")
    outside = mask[0] == 0
    assert torch.equal(on[0][:, outside], image[0][:, outside])


def test_the_seam_ring_lies_outside_the_pasted_area_and_within_its_width():
    weights = torch.zeros(1, 1, 20, 20)
    weights[..., 8:12, 8:12] = 1.0
    ring = seam_ring(weights, 2)
    assert not bool(ring[weights > 0].any()) and bool(ring[0, 0, 6, 9]) and not bool(ring[0, 0, 4, 9])


def test_a_crop_without_a_ring_is_returned_unchanged():
    generated = torch.rand(1, 3, 8, 8)
    assert match_seam(generated, torch.rand(1, 3, 8, 8), torch.ones(1, 1, 8, 8)) is generated
