"""Qwen-Image-Edit's reference latents beside a Qwen-Image ControlNet, on a current ComfyUI (``COMFYUI_PATH``).

ComfyUI's ReferenceLatent node appends ``reference_latents`` to the conditioning; the Qwen-Image model then
appends the references' tokens after the noise tokens and adds each ControlNet residual to the first
``add.shape[1]`` image tokens only. A residual (and its token-grid mask) sized from the noise latent keeps the
references free of control; one sized from the whole sequence would fail or reach into them. Tiny weights and
ComfyUI's own ControlNet as in test_qwen_image_comfy_parity.py.
"""
import pytest
import torch

import comfy_host
from comfy_sampling import OneFrameVAE, forget_dropped_models, recording, rel_diff, write_controlnet_folder
from test_qwen_image_comfy_parity import (IMAGE, LATENT, REL_TOL, RUN, _comfy_controlnet, _comfyui, _conditioning,
                                          _ours, _tiny_qwen_model)

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Qwen-Image needs a current ComfyUI: set COMFYUI_PATH to run the reference-latent tests")]

REFERENCE = torch.randn(1, 16, 1, 6, 10, generator=torch.Generator().manual_seed(21))  # 3 x 5 = 15 tokens
NAME = "qwen_union_edit.safetensors"
NOISE_TOKENS = (LATENT.shape[-2] // 2) * (LATENT.shape[-1] // 2)  # 4 x 6 = 24 tokens


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def native(nodes, tmp_path_factory):
    """ComfyUI's own tiny Qwen-Image ControlNet, also written to a controlnet folder as :data:`NAME`."""
    net = _comfy_controlnet()
    write_controlnet_folder(tmp_path_factory, "qwen_edit_controlnet", {NAME: net.state_dict()})
    return net


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return OneFrameVAE(tiny_sd3_vae())


@pytest.fixture(scope="module")
def model(nodes):
    """ComfyUI's ControlNet spreads residuals over 60 base blocks whatever the MODEL has; 60 here too."""
    return _tiny_qwen_model(nodes)


def _with_reference(nodes, conditioning):
    """``conditioning`` through ComfyUI's own ReferenceLatent node."""
    from comfy_extras.nodes_edit_model import ReferenceLatent
    return ReferenceLatent.execute(conditioning, {"samples": REFERENCE})[0]


def _edit_conditioning(nodes):
    return _with_reference(nodes, _conditioning(1)), _with_reference(nodes, _conditioning(2))


def test_the_reference_latent_reaches_the_model_and_changes_the_result(nodes, model):
    plain = comfy_host.sample(model, _conditioning(1), _conditioning(2), **RUN)
    edited = comfy_host.sample(model, *_edit_conditioning(nodes), **RUN)
    assert rel_diff(edited, plain) > 1e-2


def test_with_a_reference_latent_every_residual_covers_the_noise_tokens_only(nodes, native, vae, model):
    calls = []
    patched = _ours(nodes, recording(model, calls), NAME, vae)
    comfy_host.sample(patched, *_edit_conditioning(nodes), **RUN)
    assert len(calls) == RUN["steps"]
    for control, references in calls:
        assert [tuple(r.shape[-3:]) for r in references] == [tuple(REFERENCE.shape[-3:])]
        assert {tuple(t.shape[1:]) for t in control["input"]} == {(NOISE_TOKENS, 48)}


def test_with_a_reference_latent_the_mask_weighs_the_noise_token_grid(nodes, native, vae, model):
    """The left half of the image: token columns 0-2 of 6 keep their residual, columns 3-5 get none."""
    mask = torch.zeros(1, IMAGE.shape[1], IMAGE.shape[2])
    mask[..., : IMAGE.shape[2] // 2] = 1
    calls = []
    patched = _ours(nodes, recording(model, calls), NAME, vae, mask=mask)
    comfy_host.sample(patched, *_edit_conditioning(nodes), **RUN)
    for control, _ in calls:
        for residual in control["input"]:
            grid = residual.unflatten(1, (LATENT.shape[-2] // 2, LATENT.shape[-1] // 2))
            assert grid.shape[1:3] == (4, 6)
            assert grid[:, :, 3:].abs().max() == 0 and grid[:, :, :3].abs().max() > 1e-3


def test_with_a_reference_latent_sampling_equals_comfyuis_qwen_image_controlnet(nodes, native, vae, model):
    edit = _edit_conditioning(nodes)
    expected = comfy_host.sample(model, *_comfyui(nodes, native, vae, conditioning=edit), **RUN)
    forget_dropped_models()
    got = comfy_host.sample(_ours(nodes, model, NAME, vae), *edit, **RUN)
    assert rel_diff(comfy_host.sample(model, *edit, **RUN), expected) > 1e-2, "the control must change the result"
    assert rel_diff(got, expected) <= REL_TOL
