"""The Qwen-Image InstantX Inpainting ControlNet through the real nodes (CNR_ControlNetLoader, CNR_HintVAE,
CNR_InpaintControl, CNR_ApplyControlResiduals) against ComfyUI's own route, ControlNetInpaintingAliMamaApply
with the ControlNet wrapped as ``load_controlnet_qwen_instantx`` wraps a 68-wide file, on identical tiny weights.

With the ComfyUI rule the two sample alike; with the reference rule (the default) they agree on a binary
mask whose edges fall on the 8-pixel grid and differ on a soft mask and on an edge 4 pixels off the grid
(see controlnet_core/injection/inpaint_hint.py). Needs a current ComfyUI (``COMFYUI_PATH``).
"""
import pytest
import torch

import comfy_host
from comfy_sampling import OneFrameVAE, forget_dropped_models, node_output, rel_diff, write_controlnet_folder
from test_qwen_image_comfy_parity import (IMAGE, MODEL_SIGMA, REL_TOL, RUN, _comfy_controlnet, _conditioning,
                                          _tiny_qwen_model)

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Qwen-Image needs a current ComfyUI: set COMFYUI_PATH to run the Qwen-Image inpainting tests")]

NAME = "qwen_inpainting_parity.safetensors"
REFERENCE = "reference (binary mask, nearest, SD3 shift)"
COMFYUI = "ComfyUI (soft mask, nearest-exact, no SD3 shift)"
HEIGHT, WIDTH = IMAGE.shape[1:3]


def _grid_mask():
    """Binary, its edges on the 8-pixel grid: both rules read it alike."""
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[:, 16:48, 24:72] = 1.0
    return mask


def _phase_mask():
    """Binary, its left and top edges 4 pixels off the grid: latent pixel i reads mask pixel 8i or 8i + 4."""
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[:, 20:48, 28:72] = 1.0
    return mask


def _soft_mask():
    """The grid mask with soft values inside and out (a feathered mask)."""
    return _grid_mask() * 0.7 + 0.2


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def native(nodes, tmp_path_factory):
    """ComfyUI's own tiny Inpainting ControlNet (68-wide embedder), also in a controlnet folder for our loader."""
    net = _comfy_controlnet(seed=4, extra_condition_channels=4)
    write_controlnet_folder(tmp_path_factory, "qwen_inpainting", {NAME: net.state_dict()})
    return net


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return OneFrameVAE(tiny_sd3_vae())


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_qwen_model(nodes)


def _comfyui(nodes, native_net, vae, mask, strength=0.8):
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.model_management as mm
    from comfy_extras.nodes_controlnet import ControlNetInpaintingAliMamaApply
    control = comfy.controlnet.ControlNet(native_net, compression_ratio=1, latent_format=comfy.latent_formats.Wan21(),
                                          load_device=mm.get_torch_device(), manual_cast_dtype=None, extra_conds=[],
                                          concat_mask=True)
    out = ControlNetInpaintingAliMamaApply.execute(_conditioning(1), _conditioning(2), control, vae, IMAGE, mask,
                                                   strength, 0.0, 1.0)
    return out[0], out[1]


def _ours(nodes, model, vae, mask, rule, strength=0.8):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", NAME), vae)
    control = node_output(nodes, "CNR_InpaintControl", control, mask, rule)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, strength, 0.0, 1.0, "balanced",
                       "crop", MODEL_SIGMA)


def _sample_both(nodes, model, native, vae, mask, rule):
    theirs = comfy_host.sample(model, *_comfyui(nodes, native, vae, mask), **RUN)
    forget_dropped_models()
    ours = comfy_host.sample(_ours(nodes, model, vae, mask, rule), _conditioning(1), _conditioning(2), **RUN)
    return ours, theirs


@pytest.mark.parametrize("mask", [_soft_mask, _phase_mask], ids=["soft mask", "mask edge 4 px off the grid"])
def test_comfyui_rule_samples_as_comfyuis_alimama_inpainting_node(nodes, native, vae, model, mask):
    ours, theirs = _sample_both(nodes, model, native, vae, mask(), COMFYUI)
    plain = comfy_host.sample(model, _conditioning(1), _conditioning(2), **RUN)
    assert rel_diff(plain, theirs) > 1e-2, "the inpainting ControlNet must change the result"
    assert rel_diff(ours, theirs) <= REL_TOL


def test_reference_rule_samples_as_comfyui_on_a_binary_mask_on_the_8_pixel_grid(nodes, native, vae, model):
    ours, theirs = _sample_both(nodes, model, native, vae, _grid_mask(), REFERENCE)
    assert rel_diff(ours, theirs) <= REL_TOL


@pytest.mark.parametrize("mask", [_soft_mask, _phase_mask], ids=["soft mask", "mask edge 4 px off the grid"])
def test_reference_rule_differs_from_comfyui_where_the_mask_is_soft_or_off_the_grid(nodes, native, vae, model, mask):
    ours, theirs = _sample_both(nodes, model, native, vae, mask(), REFERENCE)
    assert rel_diff(ours, theirs) > 1e-3


def test_the_models_latent_format_normalises_as_the_qwen_image_inpaint_pipeline(nodes):
    """The binder scales the hint latent with the MODEL's Wan-2.1 latent format; the reference pipeline with
    ``(z - latents_mean) / latents_std`` of Qwen-Image's VAE config (its defaults are the released values)."""
    import inspect

    import comfy.latent_formats
    from diffusers import AutoencoderKLQwenImage
    defaults = inspect.signature(AutoencoderKLQwenImage.__init__).parameters
    mean = torch.tensor(defaults["latents_mean"].default).view(1, 16, 1, 1, 1)
    std = torch.tensor(defaults["latents_std"].default).view(1, 16, 1, 1, 1)
    z = torch.randn(2, 16, 1, 4, 6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(comfy.latent_formats.Wan21().process_in(z), (z - mean) / std, atol=1e-6)
