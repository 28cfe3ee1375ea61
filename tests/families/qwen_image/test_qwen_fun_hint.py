"""The Fun ControlNet's 33-channel hint as the reference pipeline builds it: control latent | keep mask | inpaint
latent, binarised and inverted mask at the latent's size, masked pixels grey, zeros for missing parts."""
import pytest
import torch
import torch.nn.functional as F

from cnr_pack.controlnet_core.families.qwen_image.fun_hint import fun_hint, keep_mask_latent, masked_inpaint_pixels


def _latent(batch=1, channels=4, size=(2, 3), seed=0):
    return torch.randn(batch, channels, *size, generator=torch.Generator().manual_seed(seed))


def test_parts_are_stacked_control_then_mask_then_inpaint():
    control, inpaint, mask = _latent(seed=1), _latent(seed=2), torch.ones(1, 1, 2, 3)
    hint = fun_hint(control, mask, inpaint)
    assert hint.shape == (1, 9, 2, 3)
    assert torch.equal(hint[:, :4], control) and torch.equal(hint[:, 4:5], mask) and torch.equal(hint[:, 5:], inpaint)


def test_missing_parts_are_zeros():
    control, inpaint = _latent(seed=1), _latent(seed=2)
    assert torch.equal(fun_hint(control)[:, 4:], torch.zeros(1, 5, 2, 3))
    only_inpaint = fun_hint(inpaint=inpaint)
    assert torch.equal(only_inpaint[:, :5], torch.zeros(1, 5, 2, 3)) and torch.equal(only_inpaint[:, 5:], inpaint)


def test_one_row_parts_serve_every_row():
    hint = fun_hint(_latent(batch=2, seed=1), torch.ones(1, 1, 2, 3))
    assert hint.shape[0] == 2 and torch.equal(hint[1, 4], torch.ones(2, 3))


@pytest.mark.parametrize("parts, message", [
    ({}, "needs a control latent or an inpaint latent"),
    ({"control": _latent(batch=2), "inpaint": _latent(batch=3)}, r"batches \[2, 3\]"),
    ({"control": _latent(), "inpaint": _latent(size=(4, 6))}, "do not share the latent's channels and size"),
    ({"control": _latent(), "inpaint": _latent(channels=5)}, "do not share the latent's channels and size"),
])
def test_parts_that_do_not_fit_are_refused(parts, message):
    with pytest.raises(ValueError, match=message):
        fun_hint(**parts)


def test_the_keep_mask_is_the_binarised_inverse_resized_nearest_like_the_reference():
    mask = torch.rand(2, 32, 48, generator=torch.Generator().manual_seed(3))
    binary = torch.where(mask[:, None] >= 0.5, 1.0, 0.0)
    expected = F.interpolate(1 - binary, size=(4, 6), mode="nearest")  # the reference pipeline's two steps
    got = keep_mask_latent(mask, (4, 6))
    assert torch.equal(got, expected)
    assert torch.equal(got[:, 0], 1 - binary[:, 0, ::8, ::8]), "nearest picks pixel 8 i, not 8 i + 4"


def test_half_is_repainted_as_the_reference_binarises_with_greater_or_equal():
    assert keep_mask_latent(torch.full((1, 8, 8), 0.5), (1, 1)).item() == 0.0


def test_masked_pixels_become_grey_and_the_rest_is_kept():
    image = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    mask = torch.zeros(1, 4, 4)
    mask[:, :2] = 0.9
    out = masked_inpaint_pixels(image, mask)
    assert torch.equal(out[..., :2, :], torch.full((1, 3, 2, 4), 0.5))
    assert torch.equal(out[..., 2:, :], image[..., 2:, :])
    # Grey is the reference's zero in the VAE's -1..1 range: image * (mask < 0.5) after 2 x - 1.
    assert torch.allclose(2 * out - 1, (2 * image - 1) * (mask[:, None] < 0.5))
