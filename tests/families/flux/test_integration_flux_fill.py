"""CNR_InpaintMaskPrep with a 16-channel VAE gives the conditioning Flux Fill reads (``concat_latent_image``,
``concat_mask``), equal to ComfyUI's InpaintModelConditioning on the same inputs.

Runs on a current ComfyUI (``COMFYUI_PATH``), whose Flux Fill model reads these keys; the 16-channel
tiny VAE is TAESD's, as in test_sd3_comfyui.py.
"""
import pytest
import torch

import comfy_host

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="Flux Fill needs a current ComfyUI: set COMFYUI_PATH to run the 16-channel inpainting test")]


def test_inpaint_mask_prep_with_a_16_channel_vae_conditions_as_inpaint_model_conditioning():
    nodes = comfy_host.boot()
    from tiny_sd3 import tiny_sd3_vae
    vae = tiny_sd3_vae()
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 64, 48, 3, generator=gen)
    mask = torch.zeros(1, 64, 48)
    mask[:, 16:48, 8:40] = 1
    positive = [[torch.randn(1, 5, 32, generator=gen), {"guidance": 3.5}]]
    negative = [[torch.randn(1, 5, 32, generator=gen), {}]]
    theirs = nodes.InpaintModelConditioning().encode(positive, negative, image, vae, mask, True)
    ours = comfy_host.run_node("CNR_InpaintMaskPrep", image=image, mask=mask, vae=vae, feather=0,
                               positive=positive, negative=negative)
    assert ours[0]["samples"].shape[1] == 16
    assert torch.allclose(ours[0]["samples"], theirs[2]["samples"], atol=1e-5)
    for mine, native in zip(ours[4:], theirs[:2]):
        got, expected = mine[0][1], native[0][1]
        assert torch.allclose(got["concat_latent_image"], expected["concat_latent_image"], atol=1e-5)
        assert torch.equal(got["concat_mask"].reshape(expected["concat_mask"].shape), expected["concat_mask"])
        assert got.get("guidance") == expected.get("guidance")
