"""Refinement nodes inside a real ComfyUI: img2img sigmas, inpaint prep, crop and paste end to end."""
import logging

import pytest
import torch
from diffusers import EulerDiscreteScheduler

import comfy_host
from comfy_host import run_node
from strength_grid import SD_BETAS, STRENGTHS

pytestmark = pytest.mark.comfy

CROP_64 = dict(padding=16, width=64, height=64, feather=6)


@pytest.fixture(scope="module")
def nodes():
    return comfy_host.boot()


@pytest.fixture(scope="module")
def model():
    return comfy_host.tiny_unet()


@pytest.fixture(scope="module")
def vae():
    return comfy_host.tiny_vae()


def test_img2img_strength_node_matches_diffusers_euler_steps_and_start_sigma(nodes, model):
    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="linspace")
    # From 2 steps: for 1 step ComfyUI's "normal" schedule is [999] and diffusers' linspace [0], a scheduler
    # difference, not a truncation one (test_schedule.py covers 1..50 on diffusers' own schedules).
    for steps in range(2, 51):
        scheduler.set_timesteps(steps)
        for strength in STRENGTHS:
            t_start = steps - min(int(steps * strength), steps)
            sigmas, executed, start = run_node("CNR_Img2ImgStrength", model=model, steps=steps, strength=strength)
            assert executed == steps - t_start == len(sigmas) - 1
            assert start == float(sigmas[0])
            # ComfyUI interpolates log-sigma between integer timesteps, diffusers sigma itself: same up to that.
            assert start == pytest.approx(float(scheduler.sigmas[t_start]), rel=2e-2, abs=1e-6)


def test_strength_zero_sigmas_leave_the_latent_unchanged_in_the_sampler(nodes, model):
    import comfy.sample
    sigmas, executed, _ = run_node("CNR_Img2ImgStrength", model=model, steps=20, strength=0.0)
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    out = comfy.sample.sample_custom(model, torch.randn_like(latent), 7.0, comfy_host.sampler("euler"), sigmas,
                                     comfy_host.conditioning(1), comfy_host.conditioning(2), latent,
                                     disable_pbar=True, seed=0)
    assert executed == 0 and torch.allclose(out, latent)


def _scene(seed=0, h=96, w=128):
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(1, h, w, 3, generator=gen)
    mask = torch.zeros(h, w)
    mask[40:62, 50:84] = 1.0
    return image, mask


def test_inpaint_prep_sample_decode_paste_keeps_every_pixel_outside_the_mask(nodes, model, vae):
    import comfy.sample
    image, mask = _scene()
    crop_image, crop_mask, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=mask, **CROP_64)
    latent, sample_mask, paste_mask, masked, pos, neg = run_node(
        "CNR_InpaintMaskPrep", image=crop_image, mask=crop_mask, vae=vae, grow=2, feather=6,
        positive=comfy_host.conditioning(3), negative=comfy_host.conditioning(4))
    noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(5))
    samples = comfy.sample.sample(model, noise, 4, 5.0, "euler", "normal", pos, neg, latent["samples"],
                                  noise_mask=latent["noise_mask"], seed=5, disable_pbar=True)
    decoded = vae.decode(samples)
    assert torch.isfinite(decoded).all()
    (out,) = run_node("CNR_PaddedPaste", original=image, generated=decoded, crop=crop, paste_mask=paste_mask)
    outside = mask == 0
    assert torch.equal(out[0][outside], image[0][outside])
    assert not torch.equal(out[0][~outside], image[0][~outside])


def test_inpaint_prep_noise_mask_is_at_latent_size_and_conditioning_has_concat_inputs(nodes, vae):
    image, mask = _scene(h=64, w=64)
    latent, sample_mask, paste_mask, masked, pos, _ = run_node(
        "CNR_InpaintMaskPrep", image=image, mask=mask, vae=vae, feather=8, latent_downscale="any_pixel",
        positive=comfy_host.conditioning(3))
    assert latent["noise_mask"].shape == (1, 1, 8, 8) and latent["samples"].shape == (1, 4, 8, 8)
    assert torch.equal(sample_mask[0], mask) and paste_mask[0][mask == 0].max() == 0
    assert torch.all(masked[0][mask > 0] == 0.5)
    assert pos[0][1]["concat_latent_image"].shape == (1, 4, 8, 8) and "concat_mask" in pos[0][1]


def test_empty_mask_crops_whole_image_warns_and_paste_returns_original(nodes, caplog):
    image, _ = _scene()
    with caplog.at_level(logging.WARNING):
        cropped, _, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=torch.zeros(96, 128),
                                    **dict(CROP_64, size_mode="native (no resize)"))
    assert "empty" in caplog.text and cropped.shape == image.shape
    (out,) = run_node("CNR_PaddedPaste", original=image, generated=torch.rand_like(cropped), crop=crop)
    assert torch.equal(out, image)


def test_mask_of_another_size_is_an_error_naming_both_sizes(nodes, vae):
    image, _ = _scene()
    with pytest.raises(ValueError, match="CNR_PaddedCrop: mask: is 64x48 but image is 128x96"):
        run_node("CNR_PaddedCrop", image=image, mask=torch.ones(48, 64), **CROP_64)
    with pytest.raises(ValueError, match="CNR_InpaintMaskPrep: mask: is 64x48 but image is 128x96"):
        run_node("CNR_InpaintMaskPrep", image=image, mask=torch.ones(1, 48, 64), vae=vae, feather=8)


def test_hint_is_cropped_exactly_like_the_image(nodes):
    image, mask = _scene()
    cropped, _, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=mask, **dict(CROP_64, filter="bilinear"))
    hint, _ = run_node("CNR_ApplyCrop", crop=crop, image=image)
    assert torch.equal(hint, cropped)


def test_refine_nodes_do_not_mutate_their_inputs(nodes, vae):
    image, mask = _scene()
    image_copy, mask_copy = image.clone(), mask.clone()
    _, _, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=mask, **CROP_64)
    run_node("CNR_PaddedPaste", original=image, generated=torch.rand(1, 64, 64, 3), crop=crop)
    run_node("CNR_InpaintMaskPrep", image=image[:, :64, :64], mask=mask[:64, :64], vae=vae, grow=2, feather=8,
             invert=True)
    assert torch.equal(image, image_copy) and torch.equal(mask, mask_copy)


def test_a_unet_model_on_padded_crop_keeps_the_8_pixel_multiple(nodes, model):
    image, mask = _scene()
    native = dict(CROP_64, size_mode="native (no resize)", multiple=8)
    alone, *_ = run_node("CNR_PaddedCrop", image=image, mask=mask, **native)
    with_model, *_ = run_node("CNR_PaddedCrop", image=image, mask=mask, model=model, **native)
    assert alone.shape[1] % 16, "the crop must be off the 16-pixel grid for this test to tell"
    assert with_model.shape == alone.shape
