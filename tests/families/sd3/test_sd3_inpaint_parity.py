"""AliMama's SD3 inpainting ControlNet (17-channel hint) through the real nodes (CNR_ControlNetLoader,
CNR_HintVAE, CNR_InpaintControl, CNR_ApplyControlResiduals) against ComfyUI's own route (its ControlNet loader
and ControlNetInpaintingAliMamaApply) on identical tiny weights and seed.

With the ComfyUI rule the two sample alike. The reference rule (the default) shifts the hint latent as the
SD3 inpainting pipeline does (ComfyUI's SD3 ControlNet loader sets the shift to 0), so it differs from
ComfyUI even on a binary mask on the 8-pixel grid. Needs a current ComfyUI (``COMFYUI_PATH``).
"""
import pytest
import torch

import comfy_host
from comfy_sampling import forget_dropped_models, node_output, rel_diff, write_controlnet_folder
from cnr_pack.controlnet_core.families.sd3.hint import SD3_VAE_SHIFT_FACTOR
from test_sd3_comfyui import _image, conditioning, instantx_state_dict, sample, tiny_sd3_model, tiny_sd3_vae

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="needs the current ComfyUI (set COMFYUI_PATH); the CI host predates SD3")]

REL_TOL = 1e-4
DEPTH, LAYERS = 4, 2
NAME = "sd3_alimama_inpainting.safetensors"
REFERENCE = "reference (binary mask, nearest, SD3 shift)"
COMFYUI = "ComfyUI (soft mask, nearest-exact, no SD3 shift)"
HEIGHT, WIDTH = _image().shape[1:3]


def _grid_mask():
    mask = torch.zeros(1, HEIGHT, WIDTH)
    mask[:, 16:48, 24:72] = 1.0
    return mask


def _soft_phase_mask():
    """Soft values, and edges 4 pixels off the 8-pixel grid."""
    mask = torch.full((1, HEIGHT, WIDTH), 0.2)
    mask[:, 20:48, 28:72] = 0.9
    return mask


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def state(nodes, tmp_path_factory):
    weights = instantx_state_dict(DEPTH, LAYERS, extra_channels=1)
    write_controlnet_folder(tmp_path_factory, "sd3_inpainting", {NAME: weights})
    return weights


@pytest.fixture(scope="module")
def vae(nodes):
    return tiny_sd3_vae()


@pytest.fixture(scope="module")
def model(nodes):
    return tiny_sd3_model(DEPTH)


def _comfyui(state, vae, mask, shift=None):
    """ComfyUI's conditioning; ``shift`` puts back the latent shift its SD3 ControlNet loader sets to 0."""
    import comfy.controlnet
    from comfy_extras.nodes_controlnet import ControlNetInpaintingAliMamaApply
    control = comfy.controlnet.load_controlnet_state_dict(dict(state))
    assert control.concat_mask, "ComfyUI must read the file as an inpainting ControlNet"
    if shift is not None:
        control.latent_format.shift_factor = shift
    out = ControlNetInpaintingAliMamaApply.execute(conditioning(1), conditioning(2), control, vae, _image(), mask,
                                                   1.0, 0.0, 1.0)
    return out[0], out[1]


def _ours(nodes, model, vae, mask, rule):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", NAME), vae)
    control = node_output(nodes, "CNR_InpaintControl", control, mask, rule)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, _image(), 1.0, 0.0, 1.0, "balanced", "crop",
                       "model sigma (ComfyUI)")


def _sample_both(nodes, model, state, vae, mask, rule, shift=None):
    theirs = sample(model, *_comfyui(state, vae, mask, shift))
    ours = sample(_ours(nodes, model, vae, mask, rule), conditioning(1), conditioning(2))
    return ours, theirs


@pytest.mark.parametrize("mask", [_grid_mask, _soft_phase_mask], ids=["grid mask", "soft mask off the grid"])
def test_comfyui_rule_samples_as_comfyuis_alimama_inpainting_node(nodes, model, state, vae, mask):
    ours, theirs = _sample_both(nodes, model, state, vae, mask(), COMFYUI)
    assert rel_diff(sample(model, conditioning(1), conditioning(2)), theirs) > 1e-2, "the ControlNet must act"
    assert rel_diff(ours, theirs) <= REL_TOL


def test_reference_rule_shifts_the_latent_and_so_differs_from_comfyui_even_on_a_grid_mask(nodes, model, state, vae):
    ours, theirs = _sample_both(nodes, model, state, vae, _grid_mask(), REFERENCE)
    assert rel_diff(ours, theirs) > 1e-3


def test_reference_rule_on_a_grid_mask_is_comfyui_with_the_sd3_shift_put_back(nodes, model, state, vae):
    ours, theirs = _sample_both(nodes, model, state, vae, _grid_mask(), REFERENCE, shift=SD3_VAE_SHIFT_FACTOR)
    assert rel_diff(ours, theirs) <= REL_TOL
