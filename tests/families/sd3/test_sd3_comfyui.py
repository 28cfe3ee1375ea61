"""Current ComfyUI: sampling with our SD3 / SD3.5 ControlNet equals sampling with ComfyUI's own, on identical weights.

ComfyUI's MMDiT reads ``control['output'][i]`` after joint block ``i``; a model wrapper adds our expanded
residuals there, as the pack's sampler route does. Where ComfyUI departs from diffusers (InstantX depths that
the ControlNet blocks do not divide; SD3.5's last block, position table and canny scaling) both are tested:
our ``comfyui`` settings reproduce ComfyUI, our defaults (diffusers' behaviour) differ from it.
"""
from dataclasses import replace

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Img2ImgPipeline

import comfy_host
from tiny_sd3 import tiny_sd3_vae
from cnr_pack.controlnet_core.residuals import merge_control
from cnr_pack.controlnet_core.families.sd3.joints import expand_to_joint_blocks
from cnr_pack.controlnet_core.families.sd3.format import build_instantx, build_sd35
from cnr_pack.controlnet_core.families.sd3.hint import hint_latent, sd35_hint_pixels
from strength_grid import FLOW_STRENGTHS
from tiny_models import randomize_all

pytestmark = [pytest.mark.comfy,
              pytest.mark.skipif(not comfy_host.is_current_host(),
                                 reason="needs the current ComfyUI (set COMFYUI_PATH); the CI host predates SD3")]

CONTEXT_DIM, POOLED_DIM, TABLE = 32, 2048, 16
LATENT = (1, 16, 8, 12)
REL_TOL = 1e-4


def _seeded(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.copy_(torch.randn(t.shape, generator=gen) * 0.05)
    return module


def tiny_sd3_model(depth: int, seed: int = 0):
    """ComfyUI's own SD3 model (64-channel heads, as ComfyUI fixes them) with seeded weights."""
    comfy_host.boot()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    config = {"in_channels": 16, "patch_size": 2, "depth": depth, "adm_in_channels": POOLED_DIM,
              "context_embedder_config": {"target": "torch.nn.Linear",
                                          "params": {"in_features": CONTEXT_DIM, "out_features": 64 * depth}},
              "num_patches": TABLE * TABLE, "pos_embed_max_size": TABLE, "pos_embed_scaling_factor": None,
              "input_size": None, "out_channels": 16, "x_block_self_attn_layers": []}
    model = comfy.supported_models.SD3(config).get_model({})
    _seeded(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def instantx_state_dict(depth: int, layers: int, seed: int = 1, extra_channels: int = 0):
    """InstantX-layout weights; ``extra_channels=1`` is AliMama's inpainting ControlNet (17-channel hint)."""
    from diffusers import SD3ControlNetModel
    torch.manual_seed(seed)
    model = SD3ControlNetModel(sample_size=2 * TABLE, patch_size=2, in_channels=16, num_layers=layers,
                               attention_head_dim=64, num_attention_heads=depth, joint_attention_dim=CONTEXT_DIM,
                               caption_projection_dim=64 * depth, pooled_projection_dim=POOLED_DIM, out_channels=16,
                               pos_embed_max_size=TABLE, extra_conditioning_channels=extra_channels)
    return {k: v.clone() for k, v in randomize_all(model, seed).state_dict().items()}


def sd35_state_dict(depth: int, layers: int, control_type: int, seed: int = 2):
    """Stability's SD3.5 ControlNet names with seeded weights (shapes from our own meta build)."""
    from cnr_pack.controlnet_core.families.sd3.model import SD35ControlNet, SD3ControlNetConfig
    with torch.device("meta"):
        shapes = SD35ControlNet(SD3ControlNetConfig("sd35", 64 * depth, depth, layers, pooled_dim=POOLED_DIM))
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in shapes.state_dict().items()}
    sd["control_type"] = torch.tensor([float(control_type)])
    return sd


def conditioning(seed: int):
    gen = torch.Generator().manual_seed(seed)
    context = torch.randn(1, 7, CONTEXT_DIM, generator=gen)
    return [[context, {"pooled_output": torch.randn(1, POOLED_DIM, generator=gen)}]]


def sample(model, positive, negative, seed=0, steps=4):
    import comfy.sample
    latent = torch.zeros(LATENT)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, 4.0, "euler", "normal", positive, negative, latent,
                               seed=seed, disable_pbar=True)


def with_our_controlnet(model, net, hint, rule):
    """The model, cloned, adding our expanded residuals to ComfyUI's control dict on every call."""
    sampling = model.get_model_object("model_sampling")
    blocks = len(model.model.diffusion_model.joint_blocks)

    def wrapper(apply_model, args):
        x, t, c = args["input"], args["timestep"], dict(args["c"])
        with torch.no_grad():
            res = net(sampling.calculate_input(t, x), sampling.timestep(t), c["c_crossattn"],
                      hint.expand(x.shape[0], -1, -1, -1), y=c.get("y"))
        c["control"] = merge_control(c.get("control"), expand_to_joint_blocks(res, blocks, net.config.layout, rule),
                                     input_popped=False)
        return apply_model(x, t, **c)

    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched


def comfyui_controlnet(nodes, state_dict, image, vae, positive, negative):
    import comfy.controlnet
    control = comfy.controlnet.load_controlnet_state_dict(dict(state_dict))
    return nodes.ControlNetApplyAdvanced().apply_controlnet(positive, negative, control, image, 1.0, 0.0, 1.0,
                                                            vae=vae)


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.fixture(scope="module")
def nodes():
    return comfy_host.boot()


@pytest.fixture(scope="module")
def vae():
    return tiny_sd3_vae()


def _image(seed=7):
    return torch.rand(1, LATENT[2] * 8, LATENT[3] * 8, 3, generator=torch.Generator().manual_seed(seed))


def _our_hint(vae, image, config, pixels=None):
    latent = vae.encode(image if pixels is None else pixels)
    return hint_latent(latent.float(), config)


@pytest.mark.parametrize("depth,layers", [(4, 2), (5, 2)])
def test_instantx_sampling_equals_comfyuis_own_controlnet(nodes, vae, depth, layers):
    model = tiny_sd3_model(depth)
    state = instantx_state_dict(depth, layers)
    net = build_instantx(state)
    positive, negative = conditioning(1), conditioning(2)
    image = _image()
    hint = _our_hint(vae, image, net.config)
    theirs = sample(model, *comfyui_controlnet(nodes, state, image, vae, positive, negative))
    ours = sample(with_our_controlnet(model, net, hint, "comfyui"), positive, negative)
    plain = sample(model, positive, negative)
    assert _rel(plain, theirs) > 1e-2, "the ControlNet must change the result"
    assert _rel(ours, theirs) <= REL_TOL
    diffusers_rule = sample(with_our_controlnet(model, net, hint, "diffusers"), positive, negative)
    if depth % layers == 0:
        assert _rel(diffusers_rule, theirs) <= REL_TOL  # ComfyUI agrees with diffusers here
    else:
        assert _rel(diffusers_rule, theirs) > 1e-3  # ComfyUI leaves the last blocks without residual


@pytest.mark.parametrize("control_type", [0, 1, 2], ids=["blur", "canny", "depth"])
def test_sd35_sampling_with_comfyui_settings_equals_comfyuis_own_controlnet(nodes, vae, control_type):
    model = tiny_sd3_model(4)
    state = sd35_state_dict(4, 2, control_type)
    net = build_sd35(state)
    net = net.with_base_embedder(model.model.diffusion_model.state_dict(), position="comfyui")
    positive, negative = conditioning(1), conditioning(2)
    image = _image()
    pixels = sd35_hint_pixels(image.movedim(-1, 1), net.config.control_type, "comfyui").movedim(1, -1)
    hint = _our_hint(vae, image, net.config, pixels)
    theirs = sample(model, *comfyui_controlnet(nodes, state, image, vae, positive, negative))
    ours = sample(with_our_controlnet(model, net, hint, "comfyui"), positive, negative)
    assert _rel(sample(model, positive, negative), theirs) > 1e-2
    assert _rel(ours, theirs) <= REL_TOL


def test_sd35_reference_settings_differ_from_comfyui(nodes, vae):
    """diffusers' / Stability's last block, cropped base position table and canny scaling are not ComfyUI's."""
    model = tiny_sd3_model(4)
    state = sd35_state_dict(4, 2, control_type=1)
    positive, negative = conditioning(1), conditioning(2)
    image = _image()
    theirs = sample(model, *comfyui_controlnet(nodes, state, image, vae, positive, negative))
    net = build_sd35(state)
    net = net.with_base_embedder(model.model.diffusion_model.state_dict())
    pixels = sd35_hint_pixels(image.movedim(-1, 1), 1).movedim(1, -1)
    ours = sample(with_our_controlnet(model, net, _our_hint(vae, image, net.config, pixels), "diffusers"),
                  positive, negative)
    assert _rel(ours, theirs) > 1e-3


def test_hint_scaling_equals_comfyuis_latent_formats(vae):
    import comfy.latent_formats
    latent = torch.randn(1, 16, 4, 4)
    instantx = build_instantx(instantx_state_dict(4, 1)).config
    sd35 = build_sd35(sd35_state_dict(4, 1, 0)).config
    comfy_sd3 = comfy.latent_formats.SD3()
    assert torch.allclose(hint_latent(latent, sd35), comfy_sd3.process_in(latent), atol=1e-6)
    comfy_sd3.shift_factor = 0  # what ComfyUI's InstantX loader sets, inpainting models included
    assert torch.allclose(hint_latent(latent, instantx), comfy_sd3.process_in(latent), atol=1e-6)
    inpainting = replace(instantx, hint_channels=17)
    assert torch.allclose(hint_latent(latent, inpainting, "comfyui"), comfy_sd3.process_in(latent), atol=1e-6)


def test_img2img_strength_on_sd3_runs_diffusers_flow_steps_from_its_noise_level(nodes):
    from types import SimpleNamespace
    model = tiny_sd3_model(2)
    node = nodes.NODE_CLASS_MAPPINGS["CNR_Img2ImgStrength"]()
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    pipe = SimpleNamespace(scheduler=scheduler)
    for steps in range(1, 31):
        for strength in FLOW_STRENGTHS:
            sigmas, executed, start = node.sigmas(model, "normal", steps, strength, "diffusers (strength)")
            scheduler.set_timesteps(steps)
            timesteps, expected = StableDiffusion3Img2ImgPipeline.get_timesteps(pipe, steps, strength, "cpu")
            assert executed == expected == len(sigmas) - 1, (steps, strength)
            if expected:
                level = scheduler.scale_noise(torch.zeros(1), timesteps[:1], torch.ones(1))
                # ComfyUI's "normal" schedule is diffusers' SD3 schedule up to float32 rounding.
                assert start == pytest.approx(float(level[0]), abs=3e-7)
