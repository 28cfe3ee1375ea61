"""Refinement on a Qwen-Image MODEL, on a current ComfyUI (``COMFYUI_PATH``): CNR_Img2ImgStrength against diffusers'
``QwenImageImg2ImgPipeline``, CNR_InpaintMaskPrep with a tiny Wan-2.1 VAE built by ComfyUI itself (16 channels, 3-D
latents, the Wan21 latent format), and CNR_PaddedCrop snapping to the 16-px patch grid.

ComfyUI's Qwen-Image samples with a fixed exponential time shift (``model_sampling.shift``, 1.15) and ends the
schedule at 0; diffusers' Qwen-Image scheduler config shifts by the image size (base 0.5 at 256 tokens, 0.9 at 8192)
and stretches the end to 0.02 (``shift_terminal``). The strength rule cuts either schedule at the same step.
"""
import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, QwenImageImg2ImgPipeline
from diffusers.pipelines.qwenimage.pipeline_qwenimage_img2img import calculate_shift

import comfy_host
from strength_grid import FLOW_STRENGTHS
from test_qwen_image_comfy_parity import _conditioning, _tiny_qwen_model
from stand_ins import tiny_wan_vae

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Qwen-Image needs a current ComfyUI: set COMFYUI_PATH to run the Qwen-Image refinement tests")]

STRENGTH, PREP, CROP = "CNR_Img2ImgStrength", "CNR_InpaintMaskPrep", "CNR_PaddedCrop"
# Qwen/Qwen-Image's scheduler/scheduler_config.json, as QwenImageImg2ImgPipeline loads it.
QWEN_SCHEDULER = {"base_image_seq_len": 256, "max_image_seq_len": 8192, "base_shift": 0.5, "max_shift": 0.9,
                  "num_train_timesteps": 1000, "shift": 1.0, "shift_terminal": 0.02, "use_dynamic_shifting": True,
                  "time_shift_type": "exponential"}
# Step counts that divide ComfyUI's 1000-entry sigma table, so its "simple" scheduler lands on diffusers' sigmas.
EVEN_STEPS = (1, 2, 4, 5, 8, 10, 20, 25, 40, 50)


@pytest.fixture(scope="module")
def nodes():
    return comfy_host.boot()


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_qwen_model(nodes, num_layers=2)


@pytest.fixture(scope="module")
def wan_vae(nodes):
    return tiny_wan_vae()


def _pipeline(config, mu):
    """The scheduler and ``get_timesteps`` of QwenImageImg2ImgPipeline, its sigmas set as the pipeline sets them."""
    scheduler = FlowMatchEulerDiscreteScheduler(**config)

    def set_timesteps(n):
        scheduler.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)

    return scheduler, set_timesteps, lambda n, s: QwenImageImg2ImgPipeline.get_timesteps(
        type("Pipe", (), {"scheduler": scheduler})(), n, s, "cpu")


def _as_comfyui_samples_qwen(model):
    """The pipeline's scheduler as ComfyUI's Qwen-Image model_sampling gives it: its shift as the exponential
    time shift's mu, and no terminal stretch."""
    shift = model.get_model_object("model_sampling").shift
    return _pipeline({**QWEN_SCHEDULER, "shift_terminal": None}, mu=shift)


def test_comfyuis_qwen_image_samples_with_a_fixed_exponential_shift_of_1_15(model):
    sampling = model.get_model_object("model_sampling")
    t = torch.tensor([0.25, 0.5, 0.75])
    shifted = np.exp(1.15) / (np.exp(1.15) + (1 / t - 1))
    assert torch.allclose(sampling.sigma(t), shifted.float(), atol=1e-6)


def test_img2img_strength_cuts_the_qwen_schedule_as_diffusers_qwen_img2img_pipeline(model):
    scheduler, set_timesteps, get_timesteps = _as_comfyui_samples_qwen(model)
    for steps in EVEN_STEPS:
        for strength in FLOW_STRENGTHS:
            sigmas, executed, start = comfy_host.run_node(STRENGTH, model=model, scheduler="simple", steps=steps,
                                                          strength=strength)
            set_timesteps(steps)
            timesteps, expected = get_timesteps(steps, strength)
            assert executed == expected == len(timesteps), (steps, strength)
            theirs = scheduler.sigmas[steps - expected:]
            assert torch.allclose(sigmas, theirs.to(sigmas.dtype), atol=1e-6), (steps, strength)


def test_the_strength_rule_cuts_diffusers_own_qwen_schedule_at_the_same_step_though_its_sigmas_differ(model):
    """diffusers' Qwen-Image config at 1024x1024 (4096 tokens): mu 0.69 instead of 1.15, ending at 0.02."""
    theirs, set_timesteps, get_timesteps = _pipeline(QWEN_SCHEDULER, mu=calculate_shift(4096, 256, 8192, 0.5, 0.9))
    for strength in FLOW_STRENGTHS:
        _, executed, _ = comfy_host.run_node(STRENGTH, model=model, scheduler="simple", steps=20, strength=strength)
        set_timesteps(20)
        assert executed == get_timesteps(20, strength)[1], strength
    comfy_sigmas = comfy_host.run_node(STRENGTH, model=model, scheduler="simple", steps=20, strength=1.0)[0]
    set_timesteps(20)
    assert (comfy_sigmas[1:-1] - theirs.sigmas[1:-1]).abs().max() > 0.05
    assert float(theirs.sigmas[-2]) == pytest.approx(0.02) and comfy_sigmas[-2] > 0.02


def _scene(batch=2, h=64, w=48):
    gen = torch.Generator().manual_seed(4)
    image = torch.rand(batch, h, w, 3, generator=gen)
    mask = torch.zeros(batch, h, w)
    mask[0, 8:40, 8:24] = 1.0
    mask[-1, 24:56, 16:40] = 1.0
    return image, mask


def test_inpaint_prep_encodes_each_image_of_a_batch_as_its_own_one_frame_wan_latent(nodes, wan_vae):
    image, mask = _scene()
    latent, *_ = comfy_host.run_node(PREP, image=image, mask=mask, vae=wan_vae)
    one_by_one = torch.cat([nodes.VAEEncode().encode(wan_vae, image[i:i + 1])[0]["samples"] for i in range(2)])
    assert wan_vae.encode(image).shape[0] == 1, "ComfyUI's Wan VAE reads a batch of images as one video"
    assert latent["samples"].shape == (2, 16, 1, 8, 6)
    assert torch.equal(latent["samples"], one_by_one)


def test_inpaint_prep_gives_one_latent_mask_per_one_frame_wan_latent(nodes, wan_vae):
    image, mask = _scene()
    latent, *_ = comfy_host.run_node(PREP, image=image, mask=mask, vae=wan_vae)
    expected = torch.nn.functional.interpolate(mask[:, None], size=(8, 6), mode="nearest")
    assert latent["noise_mask"].shape == (2, 1, 1, 8, 6)
    assert torch.equal(latent["noise_mask"][:, :, 0], expected)


def test_inpainting_a_qwen_model_changes_only_each_images_masked_latent_cells(nodes, model, wan_vae):
    """Sampling goes through the Wan21 latent format (16 channels normalised in, and back out): outside each
    image's own mask the latent comes back as it went in."""
    import comfy.sample
    image, mask = _scene()
    latent, *_ = comfy_host.run_node(PREP, image=image, mask=mask, vae=wan_vae)
    samples = latent["samples"]
    noise = torch.randn(samples.shape, generator=torch.Generator().manual_seed(5))
    out = comfy.sample.sample(model, noise, 4, 2.0, "euler", "simple", _conditioning(1), _conditioning(2), samples,
                              noise_mask=latent["noise_mask"], seed=5, disable_pbar=True)
    kept = (latent["noise_mask"] == 0).expand_as(samples)
    assert torch.allclose(out[kept], samples[kept], atol=1e-5)
    assert all((out[i] - samples[i])[~kept[i]].abs().max() > 1e-2 for i in range(2))


def test_padded_crop_snaps_its_sizes_to_16_pixels_on_a_qwen_model(nodes, model):
    gen = torch.Generator().manual_seed(4)
    image, mask = torch.rand(1, 96, 128, 3, generator=gen), torch.zeros(96, 128)
    mask[40:62, 50:84] = 1.0
    native = {"padding": 16, "size_mode": "native (no resize)", "multiple": 8}
    alone, *_ = comfy_host.run_node(CROP, image=image, mask=mask, **native)
    snapped, *_ = comfy_host.run_node(CROP, image=image, mask=mask, model=model, **native)
    assert alone.shape[1] % 16, "the 8-pixel multiple alone must leave the 16-pixel grid"
    assert snapped.shape[1] % 16 == 0 and snapped.shape[2] % 16 == 0


@pytest.mark.parametrize("size, box", [((40, 40), (slice(2, 38), slice(4, 20))),
                                       ((12, 64), (slice(2, 10), slice(8, 24)))],
                         ids=["mask taller than the largest grid box", "image under one grid step"])
def test_padded_crop_on_a_qwen_model_refuses_a_native_crop_no_grid_box_can_hold(nodes, model, size, box):
    image, mask = torch.rand(1, *size, 3, generator=torch.Generator().manual_seed(4)), torch.zeros(size)
    mask[box] = 1.0
    inputs = {"padding": 0, "size_mode": "native (no resize)", "multiple": 8}
    alone = comfy_host.run_node(CROP, image=image, mask=mask, **inputs)[0]
    assert alone.shape[1] % 16 or alone.shape[2] % 16, "without the MODEL the crop must leave the 16-px grid"
    with pytest.raises(ValueError, match=r"^CNR_PaddedCrop: size_mode: .*no 16-px-grid box .* fits around the mask "
                                         r".*'width x height' or 'long side'"):
        comfy_host.run_node(CROP, image=image, mask=mask, model=model, **inputs)


def test_padded_crop_on_a_qwen_model_resizes_onto_the_grid_in_width_x_height_mode(nodes, model):
    image, mask = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(4)), torch.zeros(40, 40)
    mask[2:38, 4:20] = 1.0
    cropped, *_ = comfy_host.run_node(CROP, image=image, mask=mask, model=model, padding=0, width=40, height=40,
                                      size_mode="width x height", multiple=8)
    assert cropped.shape[1] % 16 == 0 and cropped.shape[2] % 16 == 0
