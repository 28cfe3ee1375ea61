"""Refinement nodes inside a real ComfyUI: img2img sigmas, inpaint prep, crop and paste end to end."""
import logging
from pathlib import Path

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


ISLANDS = ((20, 30, 24, 36), (60, 70, 190, 204), (120, 132, 40, 50))  # y1, y2, x1, x2 on 192x256, row-major order
REGION_CROP = dict(padding=8, width=64, height=64, feather=4)


def _islands_scene():
    image = torch.rand(1, 192, 256, 3, generator=torch.Generator().manual_seed(7))
    masks = torch.zeros(len(ISLANDS), 192, 256)
    for k, (y1, y2, x1, x2) in enumerate(ISLANDS):
        masks[k, y1:y2, x1:x2] = 1.0
    return image, masks


def _sample_and_paste(model, vae, image, mask, noise, original, regions):
    """PaddedCrop -> InpaintMaskPrep -> one comfy.sample.sample call on the crop batch -> decode -> PaddedPaste."""
    import comfy.sample
    crops, crop_masks, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=mask, regions=regions, **REGION_CROP)
    latent, _, paste_mask, _, pos, neg = run_node(
        "CNR_InpaintMaskPrep", image=crops, mask=crop_masks, vae=vae, grow=2, feather=4,
        positive=comfy_host.conditioning(3), negative=comfy_host.conditioning(4))
    assert latent["samples"].shape[0] == noise.shape[0] == crops.shape[0]
    samples = comfy.sample.sample(model, noise, 3, 5.0, "euler", "normal", pos, neg, latent["samples"],
                                  noise_mask=latent["noise_mask"], seed=5, disable_pbar=True)
    (out,) = run_node("CNR_PaddedPaste", original=original, generated=vae.decode(samples), crop=crop,
                      paste_mask=paste_mask)
    return out, crops


def test_three_islands_sampled_in_one_batch_equal_three_single_region_runs_with_the_same_noise(nodes, model, vae):
    image, masks = _islands_scene()
    union = masks.amax(0)
    # ComfyUI's KSampler draws one noise tensor for the whole batch from the seed (row i of a batch is not
    # the noise a batch of 1 gets from that seed), so both sides get explicit noise: row k for island k.
    noise = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    batched, crops = _sample_and_paste(model, vae, image, union, noise, image, "islands")
    assert crops.shape == (3, 64, 64, 3)
    one_by_one = image
    for k in range(3):
        single, crop_k = _sample_and_paste(model, vae, image, masks[k], noise[k:k + 1], one_by_one, "single")
        assert torch.equal(crop_k[0], crops[k]), "the single-region crop must be the batch's crop k"
        one_by_one = single
    outside = union == 0
    assert torch.equal(batched[0][outside], image[0][outside])
    assert not torch.equal(batched[0][~outside], image[0][~outside])
    # A batch of 3 runs the UNet and VAE on 3 rows at once; float sums may round differently than on one row.
    assert torch.allclose(batched, one_by_one, atol=1e-5, rtol=0)


def test_one_hint_is_cropped_per_region_exactly_like_the_image(nodes):
    image, masks = _islands_scene()
    crops, _, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=masks.amax(0), regions="islands",
                                 **dict(REGION_CROP, filter="bilinear"))
    hints, _ = run_node("CNR_ApplyCrop", crop=crop, image=image)
    assert hints.shape == (3, 64, 64, 3) and torch.equal(hints, crops)


def test_a_batch_of_masks_crops_one_region_per_mask_of_one_image(nodes):
    image, masks = _islands_scene()
    crops, crop_masks, crop, debug = run_node("CNR_PaddedCrop", image=image, mask=masks, regions="mask batch",
                                              **REGION_CROP)
    assert crops.shape == (3, 64, 64, 3) and debug.shape == (3, 64, 64, 3)
    assert all(float(m.sum()) > 0 for m in crop_masks)


def test_rgba_crop_and_paste_keep_the_alpha_channel(nodes):
    image, masks = _islands_scene()
    rgba = torch.cat([image, torch.rand(1, 192, 256, 1, generator=torch.Generator().manual_seed(8))], -1)
    crops, _, crop, _ = run_node("CNR_PaddedCrop", image=rgba, mask=masks.amax(0), regions="islands", **REGION_CROP)
    (out,) = run_node("CNR_PaddedPaste", original=rgba, generated=torch.rand(3, 64, 64, 3), crop=crop)
    assert crops.shape[-1] == 4 and out.shape == rgba.shape
    assert torch.equal(out[..., 3], rgba[..., 3])


def test_debug_output_shows_the_sampling_mask_the_paste_weights_and_the_seam_ring(nodes):
    import torch.nn.functional as F
    image, masks = _islands_scene()
    crops, crop_masks, crop, debug = run_node("CNR_PaddedCrop", image=image, mask=masks[0], **REGION_CROP)
    overlay = (debug[0] - 0.35 * crops[0]) / 0.65  # the picture is 35 % crop, 65 % overlay
    red, green, blue = overlay[..., 0], overlay[..., 1], overlay[..., 2]
    # ComfyUI's sampler scales a noise mask to the latent grid bilinearly; shown in 8-pixel blocks.
    latent = F.interpolate(crop_masks[:1, None], size=(8, 8), mode="bilinear")
    assert torch.allclose(red, F.interpolate(latent, size=(64, 64), mode="nearest")[0, 0], atol=1e-5)
    inside, outside = crop_masks[0] > 0.99, crop_masks[0] == 0
    assert green[outside].abs().max() < 1e-5 and green[inside].max() > 0.9
    assert blue[inside].abs().max() < 1e-5 and blue[outside].max() > 0.99


def test_the_crop_preview_draws_every_region_box(nodes):
    import folder_paths
    import numpy as np
    from PIL import Image
    image, masks = _islands_scene()
    node = nodes.NODE_CLASS_MAPPINGS["CNR_PaddedCrop"]()
    out = node.crop(**{**comfy_host.node_defaults(type(node)), "image": image, "mask": masks.amax(0),
                       "regions": "islands", **REGION_CROP})
    picture = np.asarray(Image.open(Path(folder_paths.get_temp_directory()) / out["ui"]["images"][0]["filename"]))
    green = (picture[..., 1] > 200) & (picture[..., 0] < 90) & (picture[..., 2] < 130)
    scale = picture.shape[1] / 256
    for box in out["result"][2].boxes:
        x, y = int(box.x * scale), int(box.y * scale)
        assert green[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].any(), f"no outline at the corner of {box}"


def test_outpaint_extension_is_masked_and_the_paste_returns_the_larger_image(nodes):
    image = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(9))
    _, crop_mask, crop, _ = run_node("CNR_PaddedCrop", image=image, mask=torch.zeros(64, 96), extend_right=0.5,
                                     padding=8, width=64, height=64, feather=4)
    box = crop.boxes[0]
    assert crop.canvas_size == (64, 144) and box.x + box.w > 96 and float(crop_mask.max()) == 1.0
    (out,) = run_node("CNR_PaddedPaste", original=image, generated=torch.rand(1, 64, 64, 3), crop=crop)
    assert out.shape == (1, 64, 144, 3) and torch.equal(out[:, :, :96], image)
    assert not torch.equal(out[:, :, 100:], image[:, :, 95:96].expand(1, 64, 44, 3))
