"""The hint of latent inpainting ControlNets against the reference pipelines' own ``prepare_image_with_mask``.

diffusers' SD3 and Qwen-Image inpainting pipelines are called with tiny seeded VAEs whose ``encode`` answers
with the distribution's mode (the pipelines sample it); their image and mask processors run on NumPy input,
so the binarisation and the ``2p - 1`` are theirs. AliMama's Flux pipeline is not in diffusers: its hint is
the SD3 pipeline's steps with Flux's VAE factors, packed as diffusers' Flux pipelines pack latents. The
ComfyUI rule's traps (soft mask, the 4-pixel phase of nearest-exact) are pinned on hand-made masks.
"""
from types import SimpleNamespace

import pytest
import torch
from diffusers import (AutoencoderKL, AutoencoderKLQwenImage, QwenImageControlNetInpaintPipeline,
                       StableDiffusion3ControlNetInpaintingPipeline)
from diffusers.pipelines.flux.pipeline_flux_controlnet import FluxControlNetPipeline

from cnr_pack.controlnet_core.families.sd3.hint import hint_latent
from cnr_pack.controlnet_core.families.sd3.model import SD3ControlNetConfig
from cnr_pack.controlnet_core.injection.inpaint_hint import inpaint_control_hint, keep_channel, masked_pixels
from cnr_pack.controlnet_core.layers.tokens import pack_patches

HEIGHT, WIDTH = 64, 96
FLUX_SHIFT, FLUX_SCALE = 0.1159, 0.3611


def _kl_vae(shift, scale, seed=0):
    """A tiny 16-channel, 8x KL VAE (SD3's and Flux's kind) with the family's latent factors."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(8, 8, 8, 8),
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=4, layers_per_block=1, shift_factor=shift, scaling_factor=scale)
    return vae.eval()


def _qwen_vae(seed=0):
    """A tiny Qwen-Image (Wan-2.1 kind) VAE, 8x, with per-channel latent means and deviations not 0 and 1."""
    torch.manual_seed(seed)
    vae = AutoencoderKLQwenImage(base_dim=8, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
                                 temperal_downsample=[False, True, True],
                                 latents_mean=[0.1 * i - 0.7 for i in range(16)],
                                 latents_std=[1.5 + 0.2 * i for i in range(16)])
    return vae.eval()


def _mode_only(vae):
    """``vae`` whose ``encode(...).latent_dist.sample()`` gives the mode (the pipelines sample it); the class's
    own ``encode`` stays reachable for our side."""
    def encode(x, *args, **kwargs):
        mode = type(vae).encode(vae, x, *args, **kwargs).latent_dist.mode()
        return SimpleNamespace(latent_dist=SimpleNamespace(sample=lambda generator=None: mode))
    vae.encode = encode
    return vae


def _inputs(seed=5, batch=1):
    """Image in 0..1 and a soft mask holding 0.5 exactly and values on both sides, NumPy (B, H, W, C)."""
    gen = torch.Generator().manual_seed(seed)
    image = torch.rand(batch, HEIGHT, WIDTH, 3, generator=gen)
    mask = torch.rand(batch, HEIGHT, WIDTH, 1, generator=gen)
    mask[:, 10:30, 20:50] = 0.5
    return image.numpy(), mask.numpy()


def _bchw(array):
    return torch.from_numpy(array).movedim(-1, 1)


def _sd3_pipeline(vae):
    return StableDiffusion3ControlNetInpaintingPipeline(
        transformer=None, scheduler=None, vae=_mode_only(vae), text_encoder=None, tokenizer=None, text_encoder_2=None,
        tokenizer_2=None, text_encoder_3=None, tokenizer_3=None, controlnet=None)


def _sd3_prepared(vae, image, mask):
    with torch.no_grad():
        return _sd3_pipeline(vae).prepare_image_with_mask(image, mask, WIDTH, HEIGHT, image.shape[0], 1, "cpu",
                                                          torch.float32)


def _kl_latent(vae, pixels):
    with torch.no_grad():
        return type(vae).encode(vae, pixels * 2.0 - 1.0).latent_dist.mode()


SD3_INPAINTING = SD3ControlNetConfig("instantx", 32, 2, 2, hint_channels=17, context_dim=24, pos_embed_max_size=16,
                                     force_zeros_for_pooled_projection=True)


def test_sd3_hint_equals_diffusers_sd3_inpainting_pipeline():
    vae = _kl_vae(0.0609, 1.5305)
    image, mask = _inputs()
    expected = _sd3_prepared(vae, image, mask)
    pixels, m = _bchw(image), _bchw(mask)
    ours = inpaint_control_hint(hint_latent(_kl_latent(vae, masked_pixels(pixels, m)), SD3_INPAINTING), m)
    assert ours.shape == expected.shape == (1, 17, HEIGHT // 8, WIDTH // 8)
    assert 0 < expected[:, 16].mean() < 1, "the mask must keep some latent pixels and repaint others"
    assert torch.allclose(ours, expected, atol=1e-6)


def test_sd3_comfyui_rule_leaves_out_the_shift_the_reference_applies():
    latent = torch.randn(1, 16, 4, 4)
    difference = hint_latent(latent, SD3_INPAINTING, "comfyui") - hint_latent(latent, SD3_INPAINTING)
    assert torch.allclose(difference, torch.full_like(latent, 0.0609 * 1.5305))


def test_flux_hint_is_alimamas_protocol_packed_to_68_features():
    vae = _kl_vae(FLUX_SHIFT, FLUX_SCALE)
    image, mask = _inputs(seed=6)
    prepared = _sd3_prepared(vae, image, mask)  # AliMama's Flux pipeline takes the same steps (landscape §3)
    expected = FluxControlNetPipeline._pack_latents(prepared, 1, 17, HEIGHT // 8, WIDTH // 8)
    pixels, m = _bchw(image), _bchw(mask)
    latent = (_kl_latent(vae, masked_pixels(pixels, m)) - FLUX_SHIFT) * FLUX_SCALE
    ours, _ = pack_patches(inpaint_control_hint(latent, m), 2)
    assert ours.shape == expected.shape == (1, HEIGHT // 16 * WIDTH // 16, 68)
    assert torch.allclose(ours, expected, atol=1e-6)


def test_qwen_image_hint_equals_diffusers_qwen_image_inpaint_pipeline():
    vae = _qwen_vae()
    image, mask = _inputs(seed=7)
    pipe = QwenImageControlNetInpaintPipeline(scheduler=None, vae=_mode_only(vae), text_encoder=None, tokenizer=None,
                                              transformer=None, controlnet=None)
    with torch.no_grad():
        expected = pipe.prepare_image_with_mask(image, mask, WIDTH, HEIGHT, 1, 1, "cpu", torch.float32)
        pixels, m = _bchw(image), _bchw(mask)
        raw = type(vae).encode(vae, (masked_pixels(pixels, m) * 2.0 - 1.0).unsqueeze(2)).latent_dist.mode()[:, :, 0]
    mean = torch.tensor(vae.config.latents_mean).view(1, 16, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, 16, 1, 1)
    ours, _ = pack_patches(inpaint_control_hint((raw - mean) / std, m), 2)
    assert ours.shape == expected.shape == (1, HEIGHT // 16 * WIDTH // 16, 68)
    assert torch.allclose(ours, expected, atol=1e-5)


def test_both_rules_black_out_the_pixels_whose_mask_is_at_least_one_half():
    image, mask = _inputs(seed=8, batch=2)
    pixels, m = _bchw(image), _bchw(mask)
    reference, comfyui = masked_pixels(pixels, m), masked_pixels(pixels, m, "comfyui")
    assert torch.equal(reference == 0, (m >= 0.5).expand_as(pixels))
    assert torch.equal(reference, comfyui)


def test_the_reference_keeps_a_binary_mask_channel_and_comfyui_the_soft_one():
    mask = torch.full((1, 1, 16, 16), 0.3)
    mask[..., 8:, :] = 0.7
    assert keep_channel(mask, (2, 2)).flatten().tolist() == [1.0, 1.0, 0.0, 0.0]
    assert torch.allclose(keep_channel(mask, (2, 2), "comfyui").flatten(), torch.tensor([0.7, 0.7, 0.3, 0.3]))


def test_the_mask_channel_samples_pixel_8i_in_the_reference_and_8i_plus_4_in_comfyui():
    mask = torch.zeros(1, 1, 8, 32)
    mask[..., 4:12] = 1.0  # repaint columns 4..11: latent column 0 sees 0 at pixel 0, 1 at pixel 4
    assert keep_channel(mask, (1, 4)).flatten().tolist() == [1.0, 0.0, 1.0, 1.0]
    assert keep_channel(mask, (1, 4), "comfyui").flatten().tolist() == [0.0, 1.0, 1.0, 1.0]


def test_one_mask_serves_a_batch_of_latents():
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., :8, :] = 1.0
    hint = inpaint_control_hint(torch.randn(3, 16, 2, 2), mask)
    keep = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    assert hint.shape == (3, 17, 2, 2) and torch.equal(hint[:, 16], keep.expand(3, 2, 2))


def test_an_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="inpaint rule"):
        keep_channel(torch.zeros(1, 1, 8, 8), (1, 1), "a1111")


def test_the_hint_keeps_the_latent_unchanged_before_the_mask_channel():
    latent = torch.randn(2, 16, 3, 5)
    hint = inpaint_control_hint(latent, torch.rand(2, 1, 24, 40))
    assert torch.equal(hint[:, :16], latent)


@pytest.mark.parametrize("rule", ["reference", "comfyui"])
def test_a_mask_of_zeros_keeps_the_image_and_gives_a_channel_of_ones(rule):
    pixels = torch.rand(1, 3, 16, 16)
    mask = torch.zeros(1, 1, 16, 16)
    assert torch.equal(masked_pixels(pixels, mask, rule), pixels)
    assert torch.equal(keep_channel(mask, (2, 2), rule), torch.ones(1, 1, 2, 2))

