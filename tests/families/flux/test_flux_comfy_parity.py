"""Flux ControlNets against ComfyUI's own ``ControlNetFlux`` and ``Flux`` on identical tiny weights:
residuals block by block, one model call, and whole sampling runs.

ComfyUI's Flux arrived after the 2024-03 CI host, so these run only on a current ComfyUI
(``COMFYUI_PATH``). ComfyUI's Flux config detection hard-codes the full width, so the tiny models
are built directly from its classes.
"""
import pytest
import torch

import comfy_host
from stand_ins import randomize_transformer
from cnr_pack.controlnet_core.families.flux.model import expand_to_base
from cnr_pack.controlnet_core.families.flux.format import (claims_flux_diffusers, claims_flux_mistoline,
                                                          claims_flux_xlabs)
from cnr_pack.controlnet_core.loading.registry import detect_format, load_controlnet
from cnr_pack.controlnet_core.residuals import merge_control

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Flux needs a current ComfyUI: set COMFYUI_PATH to run the Flux parity tests")]

AXES_DIM = (4, 4, 8)
PARAMS = {"in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32, "hidden_size": 32,
          "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "axes_dim": list(AXES_DIM),
          "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}
BASE_DOUBLE, BASE_SINGLE = 19, 38  # what ComfyUI's ControlNetFlux always spreads to
TOL = 1e-5


def _comfy_controlnet(seed=0, depth_single_blocks=2, **kwargs):
    comfy_host.boot()
    import comfy.ldm.flux.controlnet
    import comfy.ops
    params = {**PARAMS, "depth_single_blocks": depth_single_blocks}
    net = comfy.ldm.flux.controlnet.ControlNetFlux(operations=comfy.ops.disable_weight_init, dtype=torch.float32,
                                                   device="cpu", **params, **kwargs)
    return randomize_transformer(net, seed)


def _comfy_flux(seed=5):
    import comfy.ldm.flux.model
    import comfy.ops
    base = comfy.ldm.flux.model.Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, device="cpu",
                                     **{**PARAMS, "depth": BASE_DOUBLE, "depth_single_blocks": BASE_SINGLE})
    return randomize_transformer(base, seed)


def _ours(native):
    """The format our table detects in ComfyUI's weights, and the model loaded from them."""
    sd = native.state_dict()
    claims = [c for c in (claims_flux_diffusers, claims_flux_xlabs, claims_flux_mistoline) if c(sd)]
    assert claims == [detect_format(sd).claims], "exactly one Flux format must claim ComfyUI's weights"
    return claims[0].__name__, load_controlnet(sd, axes_dim=AXES_DIM)


def _inputs(pixels: bool, seed=3):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 16, 8, 6, generator=gen)
    hint = torch.rand(1, 3, 64, 48, generator=gen) if pixels else torch.randn(1, 16, 8, 6, generator=gen)
    return {"x": x, "timesteps": torch.tensor([0.3, 0.8]), "context": torch.randn(2, 5, 32, generator=gen),
            "y": torch.randn(2, 32, generator=gen), "guidance": torch.tensor([3.5, 2.0]), "hint": hint}


def _run_both(native, ours, inputs, control_type=None, repeat_mode=None):
    with torch.no_grad():
        theirs = native(**inputs, control_type=[] if control_type is None else [control_type])
        own = ours(inputs["x"], inputs["timesteps"], inputs["context"], inputs["hint"], inputs["y"],
                   guidance=inputs["guidance"], control_type=control_type)
    expanded = expand_to_base(own, BASE_DOUBLE, BASE_SINGLE, repeat_mode=repeat_mode or ours.config.repeat_mode)
    return theirs, expanded


def _max_diff(theirs, expanded) -> float:
    pairs = list(zip(theirs["input"], expanded.input)) + list(zip(theirs.get("output", []), expanded.output))
    assert (len(theirs["input"]), len(theirs.get("output", []))) == (len(expanded.input), len(expanded.output))
    return max((a - b).abs().max().item() for a, b in pairs)


@pytest.mark.parametrize("control_type", [None, 2])
def test_latent_hint_union_model_matches_comfyui_on_every_block(control_type):
    native = _comfy_controlnet(latent_input=True, num_union_modes=7, control_latent_channels=16)
    name, ours = _ours(native)
    theirs, expanded = _run_both(native, ours, _inputs(pixels=False), control_type)
    assert (name, ours.config.hint_input, ours.config.num_union_modes) == ("claims_flux_xlabs", "latent", 7)
    assert min(t.abs().max().item() for t in expanded.tensors) > 0.1
    assert _max_diff(theirs, expanded) <= TOL


def test_xlabs_model_matches_comfyui_on_every_block():
    native = _comfy_controlnet(depth_single_blocks=0)
    name, ours = _ours(native)
    theirs, expanded = _run_both(native, ours, _inputs(pixels=True))
    assert (name, ours.config.hint_input, ours.config.repeat_mode) == ("claims_flux_xlabs", "pixels", "tile")
    assert _max_diff(theirs, expanded) <= TOL


def test_comfyui_tiles_single_block_residuals_of_pixel_hint_models_where_diffusers_repeats_them():
    native = _comfy_controlnet()
    _, ours = _ours(native)
    theirs, as_diffusers = _run_both(native, ours, _inputs(pixels=True))
    _, as_comfy = _run_both(native, ours, _inputs(pixels=True), repeat_mode="tile_all")
    assert _max_diff(theirs, as_comfy) <= TOL
    assert max((a - b).abs().max().item() for a, b in zip(theirs["output"], as_diffusers.output)) > 1e-3


def test_mistoline_model_matches_comfyui_on_every_block():
    native = _comfy_controlnet(mistoline=True)
    name, ours = _ours(native)
    theirs, expanded = _run_both(native, ours, _inputs(pixels=True))
    assert (name, ours.config.residual_activation) == ("claims_flux_mistoline", True)
    assert ours.config.repeat_mode == "tile_all"
    assert _max_diff(theirs, expanded) <= TOL


def test_comfyui_flux_with_our_merged_control_equals_it_with_comfyui_control():
    native = _comfy_controlnet(latent_input=True, num_union_modes=7, control_latent_channels=16)
    _, ours = _ours(native)
    inputs = _inputs(pixels=False)
    theirs, _ = _run_both(native, ours, inputs, control_type=4)
    base = _comfy_flux()
    with torch.no_grad():
        own = ours(inputs["x"], inputs["timesteps"], inputs["context"], inputs["hint"], inputs["y"],
                   guidance=inputs["guidance"], control_type=4)
    # ComfyUI spreads over Flux's 19 / 38 blocks whatever the base model; ours over the base model's
    # own blocks. The two agree on a base of Flux's depth.
    spread = expand_to_base(own, len(base.double_blocks), len(base.single_blocks), repeat_mode=ours.config.repeat_mode)
    control = merge_control(None, spread, input_popped=False)
    args = (inputs["x"], inputs["timesteps"], inputs["context"], inputs["y"], inputs["guidance"])
    with torch.no_grad():
        expected = base(*args, control=theirs)
        got = base(*args, control=control)
        plain = base(*args)
    assert (expected - plain).abs().max() > 1e-2, "the control must change the output"
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def _tiny_flux_model(seed=5):
    """ComfyUI's own Flux MODEL (model_base.Flux in a ModelPatcher) at Flux's depth and a tiny width."""
    comfy_host.boot()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    config = {**PARAMS, "image_model": "flux", "depth": BASE_DOUBLE, "depth_single_blocks": BASE_SINGLE}
    model = comfy.supported_models.Flux(config).get_model({})
    randomize_transformer(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def _flux_conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 5, 32, generator=gen),
             {"pooled_output": torch.randn(1, 32, generator=gen), "guidance": 3.5}]]


def _with_our_residuals(model, ours, hint, strength, control_type=None):
    """The route the Apply node takes, reduced to its core: a UNet function wrapper computing our
    residuals from the inputs ComfyUI's Flux sees and merging them into ``c["control"]``."""
    sampling = model.get_model_object("model_sampling")
    blocks = model.model.diffusion_model

    def wrapper(apply_model, args):
        x, sigma, c = args["input"], args["timestep"], args["c"]
        res = ours(sampling.calculate_input(sigma, x), sampling.timestep(sigma), c["c_crossattn"], hint, c["y"],
                   guidance=c["guidance"], control_type=control_type)
        spread = expand_to_base(res.map(lambda t: t * strength), len(blocks.double_blocks), len(blocks.single_blocks),
                                repeat_mode=ours.config.repeat_mode)
        control = merge_control(c.get("control"), spread, input_popped=False)
        return apply_model(x, sigma, **dict(c, control=control))

    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched


@pytest.mark.parametrize("kind", ["xlabs", "union"])
def test_sampling_with_our_residuals_equals_comfyui_flux_controlnet(kind):
    nodes = comfy_host.boot()
    import comfy.controlnet
    import comfy.model_management as mm
    model = _tiny_flux_model()
    pixels = kind == "xlabs"
    native_net = (_comfy_controlnet(depth_single_blocks=0) if pixels else
                  _comfy_controlnet(latent_input=True, num_union_modes=7, control_latent_channels=16))
    _, ours = _ours(native_net)
    gen = torch.Generator().manual_seed(11)
    latent = torch.zeros(1, 16, 8, 6)
    # ComfyUI resizes the hint to the latent grid first; given at that size, nothing is resampled.
    hint = torch.rand(1, 3, 64, 48, generator=gen) if pixels else torch.randn(1, 16, 8, 6, generator=gen)
    # No VAE and no latent format: ComfyUI passes the latent hint through as given, like ours.
    native = comfy.controlnet.ControlNet(native_net, compression_ratio=8 if pixels else 1,
                                         load_device=mm.get_torch_device(), manual_cast_dtype=None,
                                         extra_conds=["y", "guidance"])
    control_type = None if pixels else 4
    if control_type is not None:
        native.set_extra_arg("control_type", [control_type])
    pos, neg = _flux_conditioning(1), _flux_conditioning(2)
    pos_c, neg_c = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, hint.movedim(1, -1), 0.8, 0.0,
                                                                     1.0)[:2]
    run = {"steps": 4, "cfg": 2.0, "latent": latent, "scheduler": "simple"}
    expected = comfy_host.sample(model, pos_c, neg_c, **run)
    got = comfy_host.sample(_with_our_residuals(model, ours, hint, 0.8, control_type), pos, neg, **run)
    plain = comfy_host.sample(model, pos, neg, **run)
    assert (expected - plain).abs().max() > 1e-2, "the control must change the result"
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
