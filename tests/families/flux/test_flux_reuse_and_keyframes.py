"""Keyframes and residual reuse live in the shared wrapper: they act on a transformer family (Flux) as on UNets.

Runs only on a current ComfyUI (``COMFYUI_PATH``), as the other Flux node tests.
"""
import pytest
import torch


import comfy_host
from comfy_sampling import node_output, write_controlnet_folder
from test_flux_comfy_parity import _comfy_controlnet, _flux_conditioning, _tiny_flux_model
from test_integration_flux import IMAGE, RUN, _plain

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Flux needs a current ComfyUI: set COMFYUI_PATH to run the Flux node tests")]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    nodes = comfy_host.boot()
    write_controlnet_folder(tmp_path_factory, "flux_reuse",
                            {"flux_reuse.safetensors": _comfy_controlnet(depth_single_blocks=0).state_dict()})
    return nodes


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_flux_model()


def _sample(nodes, model, **optional):
    control = node_output(nodes, "CNR_ControlNetLoader", "flux_reuse.safetensors")
    patched = node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, 0.8, 0.0, 1.0, "balanced", "crop",
                          "executed steps (diffusers)", **optional)
    seen = []
    handle = control.net.register_forward_pre_hook(lambda mod, inp: seen.append(1))
    try:
        return comfy_host.sample(patched, _flux_conditioning(1), _flux_conditioning(2), **RUN), len(seen)
    finally:
        handle.remove()


def test_flux_reuse_every_two_runs_the_controlnet_on_half_the_steps(nodes, model):
    full, full_forwards = _sample(nodes, model)
    reused, forwards = _sample(nodes, model, reuse_every=2)
    assert (full_forwards, forwards) == (RUN["steps"], RUN["steps"] // 2)
    assert not torch.equal(full, reused)


def test_flux_reuse_every_step_is_bit_identical_to_no_reuse(nodes, model):
    assert torch.equal(_sample(nodes, model)[0], _sample(nodes, model, reuse_every=1)[0])


def test_flux_keyframe_of_strength_zero_from_the_start_leaves_the_model_as_without_control(nodes, model):
    keyframes = node_output(nodes, "CNR_StrengthKeyframe", 0.0, 0.0, 1, True, "none")
    out, forwards = _sample(nodes, model, keyframes=keyframes)
    assert forwards == 0
    assert torch.equal(out, _plain(model))
