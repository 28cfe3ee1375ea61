"""Flux ControlNets through the real nodes (CNR_ControlNetLoader, CNR_HintVAE, CNR_FluxUnionMode,
CNR_ApplyControlResiduals) against ComfyUI's own Flux ControlNet path, on identical tiny weights and seed.

ComfyUI's Flux arrived after the 2024-03 CI host, so these run only on a current ComfyUI
(``COMFYUI_PATH``). The tiny base model and ControlNets are built from ComfyUI's own classes, as in
test_flux_comfy_parity.py.
"""
import pytest
import torch

import comfy_host
from comfy_sampling import forget_dropped_models, node_output, rel_diff, write_controlnet_folder
from test_flux_comfy_parity import _comfy_controlnet, _flux_conditioning, _tiny_flux_model

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Flux needs a current ComfyUI: set COMFYUI_PATH to run the Flux node tests")]

LATENT = torch.zeros(1, 16, 8, 6)
# At 8x the latent, so neither side resamples the control image.
IMAGE = torch.rand(1, 64, 48, 3, generator=torch.Generator().manual_seed(11))
MODEL_SIGMA = "model sigma (ComfyUI)"
EXECUTED = "executed steps (diffusers)"
RUN = {"steps": 4, "cfg": 2.0, "latent": LATENT, "scheduler": "simple"}
REL_TOL = 1e-4


@pytest.fixture(autouse=True)
def forget_dropped_models_first(nodes):
    forget_dropped_models()


@pytest.fixture(scope="module")
def natives(nodes, tmp_path_factory):
    """ComfyUI's own tiny Flux ControlNets, also written to a controlnet folder for our loader."""
    nets = {"union.safetensors": _comfy_controlnet(latent_input=True, num_union_modes=7, control_latent_channels=16),
            "xlabs.safetensors": _comfy_controlnet(depth_single_blocks=0)}
    write_controlnet_folder(tmp_path_factory, "flux_controlnet", {name: net.state_dict() for name, net in nets.items()})
    return nets


@pytest.fixture(scope="module")
def model(nodes):
    return _tiny_flux_model()


@pytest.fixture(scope="module")
def vae(nodes):
    from tiny_sd3 import tiny_sd3_vae
    return tiny_sd3_vae()  # 16 latent channels, like Flux's VAE


def _ours(nodes, model, name, vae=None, mode=None, strength=0.8, start=0.0, end=1.0, timing=MODEL_SIGMA, **optional):
    control = node_output(nodes, "CNR_ControlNetLoader", name)
    if vae is not None:
        control = node_output(nodes, "CNR_HintVAE", control, vae)
    if mode is not None:
        control = node_output(nodes, "CNR_FluxUnionMode", control, mode)
    return node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, strength, start, end, "balanced",
                       "crop", timing, **optional)


def _comfyui(nodes, native_net, vae=None, control_type=None, strength=0.8, start=0.0, end=1.0, conditioning=None):
    """Conditioning with ComfyUI's own ControlNet, loaded as its Flux loaders load these files."""
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.model_management as mm
    latent = vae is not None
    native = comfy.controlnet.ControlNet(native_net, compression_ratio=1 if latent else 8,
                                         latent_format=comfy.latent_formats.Flux() if latent else None,
                                         load_device=mm.get_torch_device(), manual_cast_dtype=None,
                                         extra_conds=["y", "guidance"])
    if control_type is not None:
        native.set_extra_arg("control_type", [control_type])
    pos, neg = conditioning or (_flux_conditioning(1), _flux_conditioning(2))
    return nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, IMAGE, strength, start, end, vae=vae)[:2]


def _plain(model):
    return comfy_host.sample(model, _flux_conditioning(1), _flux_conditioning(2), **RUN)


def test_union_model_with_a_mode_and_hint_vae_samples_as_comfyuis_flux_controlnet(nodes, natives, model, vae):
    expected = comfy_host.sample(model, *_comfyui(nodes, natives["union.safetensors"], vae, control_type=4), **RUN)
    got = comfy_host.sample(_ours(nodes, model, "union.safetensors", vae, mode="pose"), _flux_conditioning(1),
                            _flux_conditioning(2), **RUN)
    assert rel_diff(_plain(model), expected) > 1e-2, "the control must change the result"
    assert rel_diff(got, expected) <= REL_TOL


def test_pixel_hint_model_samples_as_comfyuis_flux_controlnet(nodes, natives, model):
    expected = comfy_host.sample(model, *_comfyui(nodes, natives["xlabs.safetensors"]), **RUN)
    got = comfy_host.sample(_ours(nodes, model, "xlabs.safetensors"), _flux_conditioning(1), _flux_conditioning(2),
                            **RUN)
    assert rel_diff(_plain(model), expected) > 1e-2, "the control must change the result"
    assert rel_diff(got, expected) <= REL_TOL


def test_model_sigma_window_samples_as_comfyuis_percent_range(nodes, natives, model):
    expected = comfy_host.sample(model, *_comfyui(nodes, natives["xlabs.safetensors"], start=0.2, end=0.6), **RUN)
    got = comfy_host.sample(_ours(nodes, model, "xlabs.safetensors", start=0.2, end=0.6), _flux_conditioning(1),
                            _flux_conditioning(2), **RUN)
    full = comfy_host.sample(model, *_comfyui(nodes, natives["xlabs.safetensors"]), **RUN)
    assert rel_diff(full, expected) > 1e-3, "the window must leave steps out"
    assert rel_diff(got, expected) <= REL_TOL


def test_executed_steps_window_controls_exactly_the_first_half_of_the_steps(nodes, natives, model):
    import comfy.sample
    pos, neg = _flux_conditioning(1), _flux_conditioning(2)
    noise = torch.randn(LATENT.shape, generator=torch.Generator().manual_seed(0))

    def steps(patched, latent, noise, first, last):
        return comfy.sample.sample(patched, noise, 4, 2.0, "euler", "simple", pos, neg, latent, start_step=first,
                                   last_step=last, force_full_denoise=last == 4, seed=0, disable_pbar=True)
    controlled = _ours(nodes, model, "xlabs.safetensors", end=0.5, timing=EXECUTED)
    half = steps(_ours(nodes, model, "xlabs.safetensors"), LATENT, noise, 0, 2)
    expected = steps(model, half, torch.zeros_like(noise), 2, 4)
    got = comfy_host.sample(controlled, pos, neg, **RUN)
    assert rel_diff(_plain(model), expected) > 1e-3
    assert rel_diff(got, expected) <= REL_TOL


def test_mask_weights_each_image_token_by_the_mask_area_it_covers(nodes, natives, model):
    """Latent 8x6 = 4x3 tokens of 16x16 pixels; the left 24 pixel columns cover token columns 1, 1/2, 0."""
    mask = torch.zeros(1, 64, 48)
    mask[..., :24] = 1
    captured = {}

    def capture(masked):
        def apply_model(x, t, **c):
            captured[masked] = c["control"]
            return x
        return apply_model

    gen = torch.Generator().manual_seed(4)
    cond = {"c_crossattn": torch.randn(2, 5, 32, generator=gen), "y": torch.randn(2, 32, generator=gen),
            "guidance": torch.tensor([3.5, 3.5])}
    args = {"input": torch.randn(2, 16, 8, 6, generator=gen), "timestep": torch.tensor([0.6, 0.6]), "c": cond,
            "cond_or_uncond": [0, 1]}
    for masked in (False, True):
        patched = _ours(nodes, model, "xlabs.safetensors", mask=mask if masked else None)
        patched.model_options["model_function_wrapper"](capture(masked), args)
    weights = torch.tensor([1.0, 0.5, 0.0]).repeat(4).view(1, 12, 1)
    full, masked = captured[False]["input"], captured[True]["input"]
    assert len(full) == len(masked) == 19
    assert all(torch.allclose(m, f * weights, atol=1e-6) for f, m in zip(full, masked))
    assert full[0].abs().max() > 1e-2


def test_stacked_on_comfyuis_own_flux_controlnet_samples_as_two_comfyui_controlnets(nodes, natives, model, vae):
    theirs = _comfyui(nodes, natives["xlabs.safetensors"])
    expected = comfy_host.sample(model, *_comfyui(nodes, natives["union.safetensors"], vae, control_type=2,
                                                  conditioning=theirs), **RUN)
    got = comfy_host.sample(_ours(nodes, model, "union.safetensors", vae, mode="depth"), *theirs, **RUN)
    assert rel_diff(comfy_host.sample(model, *theirs, **RUN), expected) > 1e-3, "both controls must act"
    assert rel_diff(got, expected) <= REL_TOL


def test_latent_hint_model_without_vae_is_refused_naming_the_hint_vae_node(nodes, natives, model):
    with pytest.raises(ValueError, match="CNR_ApplyControlResiduals: controlnet: .*CNR_HintVAE"):
        _ours(nodes, model, "union.safetensors")


def test_union_mode_node_refuses_a_model_without_modes(nodes, natives):
    control = node_output(nodes, "CNR_ControlNetLoader", "xlabs.safetensors")
    with pytest.raises(ValueError, match="CNR_FluxUnionMode: controlnet: .*not a Flux union"):
        node_output(nodes, "CNR_FluxUnionMode", control, "canny")


def test_soft_control_modes_are_refused_on_flux(nodes, natives, model):
    control = node_output(nodes, "CNR_ControlNetLoader", "xlabs.safetensors")
    with pytest.raises(ValueError, match="control_mode: .*balanced"):
        node_output(nodes, "CNR_ApplyControlResiduals", model, control, IMAGE, 1.0, 0.0, 1.0,
                    "my prompt is more important", "crop", MODEL_SIGMA)


def test_the_controlnet_attends_with_comfyuis_attention_kernel(nodes, natives, model, monkeypatch):
    """ComfyUI picks the kernel at launch (PyTorch, xformers, SageAttention, split); the ControlNet uses
    the one its Flux uses, so each of its blocks adds one call per model call."""
    import functools

    import comfy.ldm.modules.attention as attention
    calls = []
    kernel = attention.optimized_attention

    @functools.wraps(kernel)  # keeps the kernel's signature, which the node layer inspects
    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return kernel(*args, **kwargs)

    monkeypatch.setattr(attention, "optimized_attention", counting)
    monkeypatch.setattr("comfy.ldm.flux.math.optimized_attention", counting)
    run = {**RUN, "cfg": 1.0}  # one model call per step
    comfy_host.sample(model, _flux_conditioning(1), _flux_conditioning(2), **run)
    base_calls = len(calls)
    calls.clear()
    comfy_host.sample(_ours(nodes, model, "xlabs.safetensors"), _flux_conditioning(1), _flux_conditioning(2), **run)
    net = natives["xlabs.safetensors"]
    assert len(calls) - base_calls == run["steps"] * (len(net.double_blocks) + len(net.single_blocks))


def test_a_flux_model_on_padded_crop_snaps_its_sizes_to_16_pixels(nodes, model):
    gen = torch.Generator().manual_seed(4)
    image, mask = torch.rand(1, 96, 128, 3, generator=gen), torch.zeros(96, 128)
    mask[40:62, 50:84] = 1.0
    native = {"padding": 16, "size_mode": "native (no resize)", "multiple": 8}
    alone, *_ = comfy_host.run_node("CNR_PaddedCrop", image=image, mask=mask, **native)
    snapped, *_ = comfy_host.run_node("CNR_PaddedCrop", image=image, mask=mask, model=model, **native)
    assert alone.shape[1] % 16, "the 8-pixel multiple alone must leave the 16-pixel grid"
    assert snapped.shape[1] % 16 == 0 and snapped.shape[2] % 16 == 0


def test_a_flux_model_on_padded_crop_refuses_a_native_crop_no_16_pixel_box_inside_the_image_holds(nodes, model):
    image, mask = torch.rand(1, 40, 40, 3, generator=torch.Generator().manual_seed(4)), torch.zeros(40, 40)
    mask[2:38, 4:20] = 1.0  # 36 px tall: the tallest 16-px-grid box inside the image is 32
    with pytest.raises(ValueError, match=r"^CNR_PaddedCrop: size_mode: .*no 16-px-grid box"):
        comfy_host.run_node("CNR_PaddedCrop", image=image, mask=mask, model=model, padding=0,
                            size_mode="native (no resize)", multiple=8)


def test_a_host_kernel_without_skip_reshape_is_not_used(nodes, monkeypatch):
    """Some 2024 builds have SD3 but kernels that take no ``skip_reshape``: the core's own attention serves."""
    import comfy.ldm.modules.attention as attention

    from cnr_pack.nodes import compat

    def old_kernel(q, k, v, heads, mask=None):
        return q

    monkeypatch.setattr(attention, "optimized_attention", old_kernel)
    assert compat.attention_kernel() is None
