"""Refinement nodes inside a real ComfyUI: img2img sigmas, inpaint prep, crop and paste end to end."""
import logging

import pytest
import torch
from diffusers import EulerDiscreteScheduler

import comfy_host
from test_schedule import SD_BETAS, STRENGTHS


@pytest.fixture(scope="module")
def nodes():
    return comfy_host.boot()


@pytest.fixture(scope="module")
def node(nodes):
    return lambda node_id: NodeCall(nodes.NODE_CLASS_MAPPINGS[node_id]())


class NodeCall:
    """Calls a node's method and returns its result tuple, as the executor would take it from a ui dict."""

    def __init__(self, instance):
        self.instance = instance

    def __getattr__(self, name):
        method = getattr(self.instance, name)
        return lambda *args, **kwargs: _result(method(*args, **kwargs))


def _result(out):
    return out["result"] if isinstance(out, dict) else out


@pytest.fixture(scope="module")
def model():
    return comfy_host.tiny_unet()


@pytest.fixture(scope="module")
def vae():
    return comfy_host.tiny_vae()


def test_img2img_strength_node_matches_diffusers_euler_steps_and_start_sigma(node, model):
    scheduler = EulerDiscreteScheduler(**SD_BETAS, timestep_spacing="linspace")
    # From 2 steps: for 1 step ComfyUI's "normal" schedule is [999] and diffusers' linspace [0], a scheduler
    # difference, not a truncation one (test_schedule.py covers 1..50 on diffusers' own schedules).
    for steps in range(2, 51):
        scheduler.set_timesteps(steps)
        for strength in STRENGTHS:
            t_start = steps - min(int(steps * strength), steps)
            sigmas, executed, start = node("CNR_Img2ImgStrength").sigmas(model, "normal", steps, strength,
                                                                         "diffusers (strength)")
            assert executed == steps - t_start == len(sigmas) - 1
            assert start == float(sigmas[0])
            # ComfyUI interpolates log-sigma between integer timesteps, diffusers sigma itself: same up to that.
            assert start == pytest.approx(float(scheduler.sigmas[t_start]), rel=2e-2, abs=1e-6)


def test_strength_zero_sigmas_leave_the_latent_unchanged_in_the_sampler(node, model):
    import comfy.sample
    sigmas, executed, _ = node("CNR_Img2ImgStrength").sigmas(model, "normal", 20, 0.0, "diffusers (strength)")
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


def test_inpaint_prep_sample_decode_paste_keeps_every_pixel_outside_the_mask(node, model, vae):
    import comfy.sample
    image, mask = _scene()
    crop_image, crop_mask, crop = node("CNR_PaddedCrop").crop(image, mask, 16, "width x height", 64, 64, 512, 8,
                                                              "bicubic", "mask", 6)
    latent, sample_mask, paste_mask, masked, pos, neg = node("CNR_InpaintMaskPrep").prepare(
        crop_image, crop_mask, vae, 2, 6, 0.5, False, "grey", "nearest", False,
        comfy_host.conditioning(3), comfy_host.conditioning(4))
    noise = torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(5))
    samples = comfy.sample.sample(model, noise, 4, 5.0, "euler", "normal", pos, neg, latent["samples"],
                                  noise_mask=latent["noise_mask"], seed=5, disable_pbar=True)
    decoded = vae.decode(samples)
    assert torch.isfinite(decoded).all()
    (out,) = node("CNR_PaddedPaste").paste(image, decoded, crop, paste_mask)
    outside = mask == 0
    assert torch.equal(out[0][outside], image[0][outside])
    assert not torch.equal(out[0][~outside], image[0][~outside])


def test_inpaint_prep_noise_mask_is_at_latent_size_and_conditioning_has_concat_inputs(node, vae):
    image, mask = _scene(h=64, w=64)
    latent, sample_mask, paste_mask, masked, pos, _ = node("CNR_InpaintMaskPrep").prepare(
        image, mask, vae, 0, 8, 0.5, False, "grey", "any_pixel", False, comfy_host.conditioning(3))
    assert latent["noise_mask"].shape == (1, 1, 8, 8) and latent["samples"].shape == (1, 4, 8, 8)
    assert torch.equal(sample_mask[0], mask) and paste_mask[0][mask == 0].max() == 0
    assert torch.all(masked[0][mask > 0] == 0.5)
    assert pos[0][1]["concat_latent_image"].shape == (1, 4, 8, 8) and "concat_mask" in pos[0][1]


def test_empty_mask_crops_whole_image_warns_and_paste_returns_original(node, caplog):
    image, _ = _scene()
    with caplog.at_level(logging.WARNING):
        cropped, _, crop = node("CNR_PaddedCrop").crop(image, torch.zeros(96, 128), 16, "native (no resize)", 64,
                                                       64, 512, 8, "bicubic", "mask", 6)
    assert "empty" in caplog.text and cropped.shape == image.shape
    (out,) = node("CNR_PaddedPaste").paste(image, torch.rand_like(cropped), crop)
    assert torch.equal(out, image)


def test_mask_of_another_size_is_an_error_naming_both_sizes(node, vae):
    image, _ = _scene()
    with pytest.raises(ValueError, match="mask is 64x48 but image is 128x96"):
        node("CNR_PaddedCrop").crop(image, torch.ones(48, 64), 16, "width x height", 64, 64, 512, 8, "bicubic",
                                    "mask", 6)
    with pytest.raises(ValueError, match="CNR_InpaintMaskPrep: mask is 64x48 but image is 128x96"):
        node("CNR_InpaintMaskPrep").prepare(image, torch.ones(1, 48, 64), vae, 0, 8, 0.5, False, "grey", "nearest",
                                            False)


def test_hint_is_cropped_exactly_like_the_image(node):
    image, mask = _scene()
    cropped, _, crop = node("CNR_PaddedCrop").crop(image, mask, 16, "width x height", 64, 64, 512, 8, "bilinear",
                                                   "mask", 6)
    hint, _ = node("CNR_ApplyCrop").apply(crop, image=image)
    assert torch.equal(hint, cropped)


def test_refine_nodes_do_not_mutate_their_inputs(node, vae):
    image, mask = _scene()
    image_copy, mask_copy = image.clone(), mask.clone()
    _, _, crop = node("CNR_PaddedCrop").crop(image, mask, 16, "width x height", 64, 64, 512, 8, "bicubic", "mask", 6)
    node("CNR_PaddedPaste").paste(image, torch.rand(1, 64, 64, 3), crop)
    node("CNR_InpaintMaskPrep").prepare(image[:, :64, :64], mask[:64, :64], vae, 2, 8, 0.5, True, "grey",
                                        "nearest", False)
    assert torch.equal(image, image_copy) and torch.equal(mask, mask_copy)
