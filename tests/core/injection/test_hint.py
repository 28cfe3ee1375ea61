"""Fitting the control image to the latent grid, and the inpaint-ControlNet hint."""
import pytest
import torch

from cnr_pack.controlnet_core.injection.hint import inpaint_hint, resize_hint


def test_crop_mode_covers_then_centre_crops():
    wide = torch.rand(1, 3, 64, 128)
    assert torch.equal(resize_hint(wide, (64, 64), "crop"), wide[..., 32:96])


def test_stretch_mode_ignores_the_aspect():
    out = resize_hint(torch.rand(1, 3, 64, 128), (32, 32), "stretch")
    assert out.shape == (1, 3, 32, 32)


def test_fill_mode_fits_inside_and_pads_with_black():
    out = resize_hint(torch.ones(1, 3, 64, 128), (64, 64), "fill")
    assert torch.all(out[..., 16:48, :] == 1) and torch.all(out[..., :16, :] == 0) and torch.all(out[..., 48:, :] == 0)


def test_same_size_is_returned_unchanged():
    image = torch.rand(2, 3, 16, 24)
    assert all(torch.equal(resize_hint(image, (16, 24), m), image) for m in ("crop", "stretch", "fill"))


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="resize mode"):
        resize_hint(torch.rand(1, 3, 8, 8), (4, 4), "zoom")


def test_inpaint_hint_sets_masked_pixels_to_minus_one_and_keeps_the_rest():
    image = torch.rand(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:6] = 1.0
    hint = inpaint_hint(image, mask)
    assert torch.all(hint[..., 2:5, 3:6] == -1)
    assert torch.equal(hint[..., mask[0, 0] == 0], image[..., mask[0, 0] == 0])
