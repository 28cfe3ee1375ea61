"""Flux Kontext's reference latents beside a Flux ControlNet, on a current ComfyUI (``COMFYUI_PATH``).

ComfyUI's ReferenceLatent node appends ``reference_latents`` to the conditioning; ComfyUI's Flux then appends
the references' tokens after the noise tokens and adds each ControlNet residual to the first ``add.shape[1]``
image tokens only (double blocks) or to the image tokens right after the text (single blocks). A residual (and
its token-grid mask) sized from the noise latent keeps the references free of control. Tiny weights and
ComfyUI's own ControlNet as in test_integration_flux.py.
"""
import pytest
import torch

import comfy_host
from comfy_sampling import (forget_dropped_models, node_output, recording, rel_diff,
                            write_controlnet_folder)
from test_flux_comfy_parity import _comfy_controlnet, _flux_conditioning, _tiny_flux_model

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Flux needs a current ComfyUI: set COMFYUI_PATH to run the Flux Kontext tests")]

NAME = "flux_kontext_controlnet.safetensors"
LATENT = torch.zeros(1, 16, 8, 12)  # 4 x 6 = 24 noise tokens
REFERENCE = torch.randn(1, 16, 6, 10, generator=torch.Generator().manual_seed(21))  # 3 x 5 = 15 tokens
IMAGE = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(11))  # 8x the latent: no resampling
RUN = {"steps": 4, "cfg": 2.0, "latent": LATENT, "scheduler": "simple"}
MODEL_SIGMA = "model sigma (ComfyUI)"
REL_TOL = 1e-4
NOISE_TOKENS = 24


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def native(nodes, tmp_path_factory):
    """ComfyUI's own tiny InstantX-style Flux ControlNet (double and single blocks, VAE-latent hint), also written
    as :data:`NAME`."""
    net = _comfy_controlnet(latent_input=True, control_latent_channels=16)
    write_controlnet_folder(tmp_path_factory, "flux_kontext_controlnet", {NAME: net.state_dict()})
    return net


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_flux_model()


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return tiny_sd3_vae()  # 16 latent channels, like Flux's VAE


def _ours(nodes, model, vae, **optional):
    control = node_output(nodes, "CNR_HintVAE", node_output(nodes, "CNR_ControlNetLoader", NAME), vae)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, 0.8, 0.0, 1.0, "balanced", "crop",
                       MODEL_SIGMA, **optional)


def _comfyui(nodes, native_net, vae, conditioning):
    """Conditioning with ComfyUI's own ControlNet, loaded as its Flux loader loads an InstantX file."""
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.model_management as mm
    net = comfy.controlnet.ControlNet(native_net, compression_ratio=1, latent_format=comfy.latent_formats.Flux(),
                                      load_device=mm.get_torch_device(), manual_cast_dtype=None,
                                      extra_conds=["y", "guidance"])
    return nodes.ControlNetApplyAdvanced().apply_controlnet(*conditioning, net, IMAGE, 0.8, 0.0, 1.0, vae=vae)[:2]


def _edit_conditioning():
    """Both prompts through ComfyUI's own ReferenceLatent node, as a Flux Kontext workflow feeds them."""
    from comfy_extras.nodes_edit_model import ReferenceLatent
    return tuple(ReferenceLatent.execute(_flux_conditioning(seed), {"samples": REFERENCE})[0] for seed in (1, 2))


def _residuals(control):
    return [t for key in ("input", "output") for t in control.get(key) or () if t is not None]


def test_the_reference_latent_reaches_the_model_and_changes_the_result(nodes, model):
    plain = comfy_host.sample(model, _flux_conditioning(1), _flux_conditioning(2), **RUN)
    assert rel_diff(comfy_host.sample(model, *_edit_conditioning(), **RUN), plain) > 1e-3


def test_with_a_reference_latent_every_residual_covers_the_noise_tokens_only(nodes, native, vae, model):
    calls = []
    comfy_host.sample(_ours(nodes, recording(model, calls), vae), *_edit_conditioning(), **RUN)
    assert len(calls) == RUN["steps"]
    for control, references in calls:
        assert [tuple(r.shape[-2:]) for r in references] == [tuple(REFERENCE.shape[-2:])]
        residuals = _residuals(control)
        assert len(control["input"]) == 19 and len(control["output"]) == 38
        assert {tuple(t.shape[1:]) for t in residuals} == {(NOISE_TOKENS, 32)}


def test_with_a_reference_latent_the_mask_weighs_the_noise_token_grid(nodes, native, vae, model):
    """The left half of the image: token columns 0-2 of 6 keep their residual, columns 3-5 get none."""
    mask = torch.zeros(1, IMAGE.shape[1], IMAGE.shape[2])
    mask[..., : IMAGE.shape[2] // 2] = 1
    calls = []
    comfy_host.sample(_ours(nodes, recording(model, calls), vae, mask=mask), *_edit_conditioning(), **RUN)
    for control, _ in calls:
        for residual in _residuals(control):
            grid = residual.unflatten(1, (4, 6))
            assert grid[:, :, 3:].abs().max() == 0 and grid[:, :, :3].abs().max() > 1e-3


def test_with_a_reference_latent_sampling_equals_comfyuis_flux_controlnet(nodes, native, vae, model):
    edit = _edit_conditioning()
    expected = comfy_host.sample(model, *_comfyui(nodes, native, vae, edit), **RUN)
    forget_dropped_models()
    got = comfy_host.sample(_ours(nodes, model, vae), *edit, **RUN)
    assert rel_diff(comfy_host.sample(model, *edit, **RUN), expected) > 1e-2, "the control must change the result"
    assert rel_diff(got, expected) <= REL_TOL
