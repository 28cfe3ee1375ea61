"""Invariants of the residual engine: zero in, zero out; masks and scales do what they say."""
import pytest
import torch

from cnr_pack.controlnet_core.injection.weighting import (block_scales, soft_weights, sum_residuals,
                                                         uncond_multiplier_for,
                                                weight_residuals)
from cnr_pack.controlnet_core import load_controlnet
from tiny_models import sample_inputs, tiny_sd15_diffusers


@pytest.fixture(scope="module")
def residuals():
    net = load_controlnet(tiny_sd15_diffusers().state_dict())
    with torch.no_grad():
        return net(*sample_inputs())


def test_zero_initialised_controlnet_gives_exactly_zero_residuals():
    net = load_controlnet(tiny_sd15_diffusers(randomize=False).state_dict())
    with torch.no_grad():
        res = net(*sample_inputs())
    assert all(torch.count_nonzero(t) == 0 for t in res.tensors)


def test_strength_zero_gives_zero_residuals(residuals):
    scaled = weight_residuals(residuals, block_scales(12, strength=0.0))
    assert all(torch.count_nonzero(t) == 0 for t in scaled.tensors)


def test_all_zero_mask_removes_every_residual(residuals):
    masked = weight_residuals(residuals, mask=torch.zeros(1, 1, 64, 64))
    assert all(torch.count_nonzero(t) == 0 for t in masked.tensors)


def test_all_one_mask_leaves_residuals_unchanged(residuals):
    masked = weight_residuals(residuals, mask=torch.ones(2, 1, 37, 51))
    assert all(torch.equal(a, b) for a, b in zip(masked.tensors, residuals.tensors))


def test_half_mask_confines_residuals_to_its_half(residuals):
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1.0
    masked = weight_residuals(residuals, mask=mask)
    for t, r in zip(masked.tensors, residuals.tensors):
        w = t.shape[-1]
        if w == 1:  # one cell covering both halves keeps half its weight
            assert torch.allclose(t, 0.5 * r)
            continue
        assert torch.count_nonzero(t[..., w // 2:]) == 0
        assert torch.equal(t[..., : w // 2], r[..., : w // 2])


def test_uncond_rows_get_nothing_in_controlnet_mode(residuals):
    row_scale = torch.tensor([1.0, uncond_multiplier_for("controlnet")])
    scaled = weight_residuals(residuals, row_scale=row_scale)
    assert all(torch.count_nonzero(t[1]) == 0 and torch.equal(t[0], r[0])
               for t, r in zip(scaled.tensors, residuals.tensors))


def test_soft_curve_matches_a1111_values():
    expected = [0.0994, 0.1205, 0.1461, 0.1770, 0.2146, 0.2601, 0.3153, 0.3822, 0.4633, 0.5615, 0.6806, 0.825, 1.0]
    assert [round(w, 4) for w in soft_weights(12)] == expected


def test_prompt_mode_multiplies_strength_by_soft_curve_and_block_weights():
    weights = [0.5] * 10
    scales = block_scales(9, strength=2.0, mode="prompt", block_weights=weights)
    assert scales == pytest.approx([2.0 * 0.5 * w for w in soft_weights(9)])


def test_block_weights_of_wrong_length_are_rejected():
    with pytest.raises(ValueError, match="13 values"):
        block_scales(12, block_weights=[1.0] * 12)


def test_sum_of_two_controlnets_adds_their_residuals(residuals):
    half = weight_residuals(residuals, [0.5] * 13)
    total = sum_residuals([half, half])
    assert all(torch.allclose(a, b) for a, b in zip(total.tensors, residuals.tensors))


def test_precomputed_hint_embedding_gives_the_same_residuals():
    net = load_controlnet(tiny_sd15_diffusers().state_dict())
    x, t, context, hint = sample_inputs()
    with torch.no_grad():
        direct = net(x, t, context, hint)
        cached = net(x, t, context, hint, hint_embedding=net.embed_hint(hint[:1]).expand(2, -1, -1, -1)[:1])
        reference = net(x, t, context, hint[:1])
    assert all(torch.equal(a, b) for a, b in zip(cached.tensors, reference.tensors))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(direct.tensors, net(x, t, context, hint,
               hint_embedding=net.embed_hint(hint)).tensors))
