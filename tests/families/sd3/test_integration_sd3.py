"""SD3 ControlNets through the real nodes (CNR_ControlNetLoader, CNR_HintVAE, CNR_ApplyControlResiduals)
against ComfyUI's own SD3 ControlNet path, on identical tiny weights and seed.

ComfyUI's SD3 arrived after the 2024-03 CI host, so these run only on a current ComfyUI
(``COMFYUI_PATH``). Tiny models as in test_sd3_comfyui.py.
"""
import pytest

import comfy_host
from comfy_sampling import node_output, rel_diff, write_controlnet_folder
from cnr_pack.controlnet_core.families.sd3.format import build_sd35
from cnr_pack.controlnet_core.families.sd3.hint import sd35_hint_pixels
from test_sd3_comfyui import (_image, _our_hint, comfyui_controlnet, conditioning, instantx_state_dict, sample,
                              sd35_state_dict, tiny_sd3_model, tiny_sd3_vae, with_our_controlnet)

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="needs the current ComfyUI (set COMFYUI_PATH); the CI host predates SD3")]

REL_TOL = 1e-4
DEPTH, LAYERS = 4, 2


@pytest.fixture(scope="module")
def files(nodes, tmp_path_factory):
    states = {"sd3_instantx.safetensors": instantx_state_dict(DEPTH, LAYERS),
              "sd35_canny.safetensors": sd35_state_dict(DEPTH, LAYERS, control_type=1)}
    write_controlnet_folder(tmp_path_factory, "sd3_controlnet", states)
    return states


@pytest.fixture(scope="module")
def vae(nodes):
    return tiny_sd3_vae()


def _ours(nodes, model, name, vae):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", name), vae)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, _image(), 1.0, 0.0, 1.0, "balanced", "crop",
                       "model sigma (ComfyUI)")


def test_instantx_controlnet_through_the_nodes_samples_as_comfyuis_own(nodes, files, vae):
    model = tiny_sd3_model(DEPTH)
    positive, negative = conditioning(1), conditioning(2)
    theirs = sample(model, *comfyui_controlnet(nodes, files["sd3_instantx.safetensors"], _image(), vae, positive,
                                               negative))
    ours = sample(_ours(nodes, model, "sd3_instantx.safetensors", vae), positive, negative)
    assert rel_diff(sample(model, positive, negative), theirs) > 1e-2, "the ControlNet must change the result"
    assert rel_diff(ours, theirs) <= REL_TOL


def test_sd35_canny_through_the_nodes_samples_as_stabilitys_reference_not_as_comfyui(nodes, files, vae):
    """Reference embedder positions, canny scaling and last-block residual; ComfyUI departs on all three."""
    model = tiny_sd3_model(DEPTH)
    positive, negative = conditioning(1), conditioning(2)
    state = files["sd35_canny.safetensors"]
    net = build_sd35(state)
    net = net.with_base_embedder(model.model.diffusion_model.state_dict())
    pixels = sd35_hint_pixels(_image().movedim(-1, 1), 1).movedim(1, -1)
    reference = sample(with_our_controlnet(model, net, _our_hint(vae, _image(), net.config, pixels), "comfyui"),
                       positive, negative)
    ours = sample(_ours(nodes, model, "sd35_canny.safetensors", vae), positive, negative)
    theirs = sample(model, *comfyui_controlnet(nodes, state, _image(), vae, positive, negative))
    assert rel_diff(sample(model, positive, negative), reference) > 1e-2, "the ControlNet must change the result"
    assert rel_diff(ours, reference) <= REL_TOL
    assert rel_diff(ours, theirs) > 1e-3


def test_sd35_apply_leaves_the_loaded_controlnet_without_an_embedder(nodes, files, vae):
    loaded = node_output(nodes, "CNR_ControlNetLoader", "sd35_canny.safetensors")
    control = node_output(nodes, "CNR_HintVAE", loaded, vae)
    node_output(nodes, "CNR_ApplyControlResiduals", tiny_sd3_model(DEPTH), control, _image(), 1.0, 0.0, 1.0, "balanced",
                "crop", "model sigma (ComfyUI)")
    assert control.net.pos_embed is None
