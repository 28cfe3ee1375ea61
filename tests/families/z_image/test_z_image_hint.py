"""The Z-Image Fun control context follows the authors' pipeline: binarised, inverted, nearest-resized mask;
grey where the inpaint image is repainted; zeros for every part not given."""
import pytest
import torch
import torch.nn.functional as F

from cnr_pack.controlnet_core.errors import ControlNetInputError
from cnr_pack.controlnet_core.families.z_image.hint import control_context, keep_mask, masked_image


def test_the_mask_is_binarised_at_one_half_and_inverted():
    mask = torch.tensor([[[0.49, 0.5, 1.0, 0.0]]])
    assert keep_mask(mask, (1, 4)).flatten().tolist() == [1.0, 0.0, 0.0, 1.0]


def test_the_mask_is_resized_with_nearest_neighbours_after_binarising():
    mask = torch.rand(1, 16, 24, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(1 - (mask[:, None] >= 0.5).float(), size=(2, 3), mode="nearest")
    assert torch.equal(keep_mask(mask, (2, 3)), expected)


def test_the_repainted_region_of_the_inpaint_image_is_grey():
    image = torch.rand(1, 3, 2, 2)
    mask = torch.tensor([[[1.0, 0.0], [0.7, 0.2]]])
    out = masked_image(image, mask)
    assert torch.all(out[..., 0, 0] == 0.5) and torch.all(out[..., 1, 0] == 0.5)
    assert torch.equal(out[..., :, 1], image[..., :, 1])


def test_missing_parts_are_zeros_in_the_33_channel_context():
    control = torch.randn(2, 16, 3, 4)
    ctx = control_context(33, 16, (3, 4), 2, control=control)
    assert ctx.shape == (2, 33, 3, 4)
    assert torch.equal(ctx[:, :16], control) and not ctx[:, 16:].any()


def test_an_inpaint_only_context_has_a_zero_control_part():
    mask = torch.ones(1, 24, 32)
    inpaint = torch.randn(1, 16, 3, 4)
    ctx = control_context(33, 16, (3, 4), 1, mask=mask, inpaint=inpaint)
    assert not ctx[:, :16].any() and not ctx[:, 16].any() and torch.equal(ctx[:, 17:], inpaint)


def test_the_v1_context_is_the_control_latent_alone():
    control = torch.randn(1, 16, 3, 4)
    assert torch.equal(control_context(16, 16, (3, 4), 1, control=control), control)


def test_an_inpaint_image_without_its_mask_is_refused():
    with pytest.raises(ControlNetInputError, match="needs its mask"):
        control_context(33, 16, (3, 4), 1, inpaint=torch.zeros(1, 16, 3, 4))


def test_a_v1_file_given_a_mask_is_refused():
    with pytest.raises(ControlNetInputError, match=r"v1\) takes no inpaint image or mask"):
        control_context(16, 16, (3, 4), 1, mask=torch.ones(1, 24, 32))


def test_parts_of_another_size_are_refused():
    with pytest.raises(ControlNetInputError, match=r"control latent must be \(B, 16, 3, 4\)"):
        control_context(33, 16, (3, 4), 1, control=torch.zeros(1, 16, 4, 4))
