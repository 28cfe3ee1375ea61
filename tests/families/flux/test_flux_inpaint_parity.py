"""A Flux inpainting ControlNet of AliMama's kind (17-channel hint packed to 68) through the real nodes
(CNR_ControlNetLoader, CNR_HintVAE, CNR_InpaintControl, CNR_ApplyControlResiduals) against ComfyUI's own
route: its ``ControlNetFlux`` with ``control_latent_channels=17`` wrapped as ``load_controlnet_flux_instantx``
wraps it, and ControlNetInpaintingAliMamaApply, on identical tiny weights.

With the ComfyUI rule the two sample alike; with the reference rule (the default) they agree on a binary mask
on the 8-pixel grid (Flux's latent scaling is the same on both sides) and differ on a soft mask with edges
4 pixels off the grid. Needs a current ComfyUI (``COMFYUI_PATH``).
"""
import pytest
import torch

import comfy_host
from comfy_sampling import forget_dropped_models, node_output, rel_diff, write_controlnet_folder
from test_flux_comfy_parity import _comfy_controlnet, _flux_conditioning, _tiny_flux_model

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Flux needs a current ComfyUI: set COMFYUI_PATH to run the Flux inpainting tests")]

NAME = "flux_alimama_inpainting.safetensors"
LATENT = torch.zeros(1, 16, 8, 6)
IMAGE = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(12))  # 8x the latent
RUN = {"steps": 4, "cfg": 2.0, "latent": LATENT, "scheduler": "simple"}
REL_TOL = 1e-4
REFERENCE = "reference (binary mask, nearest, SD3 shift)"
COMFYUI = "ComfyUI (soft mask, nearest-exact, no SD3 shift)"


def _grid_mask():
    mask = torch.zeros(1, 64, 48)
    mask[:, 16:48, 8:40] = 1.0
    return mask


def _soft_phase_mask():
    """Soft values, and edges 4 pixels off the 8-pixel grid."""
    mask = torch.full((1, 64, 48), 0.2)
    mask[:, 20:48, 12:40] = 0.9
    return mask


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def native(nodes, tmp_path_factory):
    net = _comfy_controlnet(seed=6, latent_input=True, control_latent_channels=17)
    write_controlnet_folder(tmp_path_factory, "flux_inpainting", {NAME: net.state_dict()})
    return net


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_flux_model()


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return tiny_sd3_vae()  # 16 latent channels, like Flux's VAE


def _comfyui(native_net, vae, mask):
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.model_management as mm
    from comfy_extras.nodes_controlnet import ControlNetInpaintingAliMamaApply
    control = comfy.controlnet.ControlNet(native_net, compression_ratio=1, latent_format=comfy.latent_formats.Flux(),
                                          load_device=mm.get_torch_device(), manual_cast_dtype=None,
                                          extra_conds=["y", "guidance"], concat_mask=True)
    out = ControlNetInpaintingAliMamaApply.execute(_flux_conditioning(1), _flux_conditioning(2), control, vae, IMAGE,
                                                   mask, 0.8, 0.0, 1.0)
    return out[0], out[1]


def _ours(nodes, model, vae, mask, rule):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", NAME), vae)
    control = node_output(nodes, "CNR_InpaintControl", control, mask, rule)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, 0.8, 0.0, 1.0, "balanced", "crop",
                       "model sigma (ComfyUI)")


def _sample_both(nodes, model, native, vae, mask, rule):
    theirs = comfy_host.sample(model, *_comfyui(native, vae, mask), **RUN)
    ours = comfy_host.sample(_ours(nodes, model, vae, mask, rule), _flux_conditioning(1), _flux_conditioning(2),
                             **RUN)
    return ours, theirs


@pytest.mark.parametrize("mask", [_grid_mask, _soft_phase_mask], ids=["grid mask", "soft mask off the grid"])
def test_comfyui_rule_samples_as_comfyuis_alimama_inpainting_node(nodes, model, native, vae, mask):
    ours, theirs = _sample_both(nodes, model, native, vae, mask(), COMFYUI)
    plain = comfy_host.sample(model, _flux_conditioning(1), _flux_conditioning(2), **RUN)
    assert rel_diff(plain, theirs) > 1e-2, "the inpainting ControlNet must change the result"
    assert rel_diff(ours, theirs) <= REL_TOL


def test_reference_rule_samples_as_comfyui_on_a_binary_mask_on_the_8_pixel_grid(nodes, model, native, vae):
    ours, theirs = _sample_both(nodes, model, native, vae, _grid_mask(), REFERENCE)
    assert rel_diff(ours, theirs) <= REL_TOL


def test_reference_rule_differs_from_comfyui_on_a_soft_mask_off_the_grid(nodes, model, native, vae):
    ours, theirs = _sample_both(nodes, model, native, vae, _soft_phase_mask(), REFERENCE)
    assert rel_diff(ours, theirs) > 1e-3
