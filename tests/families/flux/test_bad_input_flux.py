"""Bad input around Flux ControlNets: damaged files, CNR_HintVAE, CNR_FluxUnionMode and the Apply node.

The rows with a Flux MODEL need a current ComfyUI (COMFYUI_PATH); the others run on every host.
"""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
import stand_ins
from bad_input import APPLY, HINT, LOADER, case_ids, check_case, cut_in_half, file_case, refused, safe, with_filled
from tiny_flux import tiny_flux_controlnet, tiny_xlabs_style_controlnet

pytestmark = pytest.mark.comfy

HINT_VAE, MODE = "CNR_HintVAE", "CNR_FluxUnionMode"
PROJECTION = "controlnet_single_blocks.1.weight"
LATENT = torch.zeros(1, 16, 8, 6)


def _sd(net):
    return {k: v.contiguous() for k, v in net.state_dict().items()}


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "flux_union"):
        e.flux_union_weights = stand_ins.tiny_flux_union_state_dict()
        names = {"flux-union.safetensors": e.flux_union_weights,
                 "flux-xlabs.safetensors": _sd(tiny_xlabs_style_controlnet()),
                 "flux-3-modes.safetensors": _sd(tiny_flux_controlnet(num_mode=3))}
        loaded = {}
        for name, weights in names.items():
            loaded[name] = comfy_host.run_node(LOADER, control_net_name=e.write(name, safetensors_bytes(weights)))[0]
        e.flux_union, e.flux_xlabs, e.flux_3_modes = loaded.values()
    return e


def with_vae(e, net):
    return comfy_host.run_node(HINT_VAE, controlnet=net, vae=e.flux_vae)[0]


FILE_CASES = [
    file_case("Flux ControlNet cut in half", "flux-half.safetensors",
              cut_in_half(lambda e: e.flux_union_weights), "truncated"),
    file_case("Flux ControlNet with a NaN weight", "flux-nan.safetensors",
              with_filled(lambda e: e.flux_union_weights, PROJECTION, float("nan")), "NaN", PROJECTION),
    file_case("Flux ControlNet missing a residual projection", "flux-noproj.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.flux_union_weights.items()
                                           if not k.startswith("controlnet_single_blocks.1.")}), "projection"),
    file_case("Black Forest Labs layout without its blocks", "flux-bfl-noblocks.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.flux_xlabs.net.state_dict().items()
                                           if not k.startswith(("double_blocks.", "single_blocks."))}),
              "Flux ControlNet weights without transformer blocks"),
    file_case("Flux ControlNet projection of the wrong width", "flux-width.safetensors",
              lambda e: safetensors_bytes({**e.flux_union_weights, PROJECTION: torch.zeros(8, 8)}), ""),
]

HINT_VAE_CASES = [
    refused("a pixel-hint (XLabs) ControlNet", HINT_VAE, lambda e: {"controlnet": e.flux_xlabs, "vae": e.vae},
            "controlnet", "remove this node"),
    refused("a classic SD ControlNet", HINT_VAE, lambda e: {"controlnet": e.controlnet, "vae": e.vae}, "controlnet",
            "remove this node"),
    refused("an SD VAE (4 latent channels) for a Flux ControlNet", HINT_VAE,
            lambda e: {"controlnet": e.flux_union, "vae": e.vae}, "vae", "4-channel", "16-channel"),
]

MODE_CASES = [
    refused("a classic SD ControlNet", MODE, lambda e: {"controlnet": e.controlnet, "mode": "canny"}, "controlnet",
            "not a Flux union"),
    refused("a Flux ControlNet without modes", MODE, lambda e: {"controlnet": e.flux_xlabs, "mode": "canny"},
            "controlnet", "not a Flux union"),
    refused("a mode no Flux union has, over a link", MODE, lambda e: {"controlnet": e.flux_union, "mode": "sketch"},
            "mode", "sketch"),
    refused("a mode number over a link", MODE, lambda e: {"controlnet": e.flux_union, "mode": 2}, "mode"),
    refused("a mode beyond a 3-mode file", MODE, lambda e: {"controlnet": e.flux_3_modes, "mode": "blur"}, "mode",
            "3 modes"),
    safe("the last mode of a 3-mode file", MODE, lambda e: {"controlnet": e.flux_3_modes, "mode": "depth"},
         lambda e, out, inputs: None if out[0].control_type == (2,) else pytest.fail(str(out[0].control_type))),
]

APPLY_CASES = [
    refused("a Flux ControlNet on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.flux_xlabs, "image": HINT}, "controlnet", "FLUX", "SD15"),
    refused("a Flux union on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.flux_union, "image": HINT}, "controlnet", "FLUX"),
]


@pytest.mark.parametrize("case", FILE_CASES + HINT_VAE_CASES + MODE_CASES + APPLY_CASES,
                         ids=case_ids(FILE_CASES + HINT_VAE_CASES + MODE_CASES + APPLY_CASES))
def test_bad_flux_inputs_are_refused_or_safe_on_every_host(env, case):
    check_case(env, case)


# ---- with a Flux MODEL (a current ComfyUI) --------------------------------------------------------------

def _flux_conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 5, 32, generator=gen), {"pooled_output": torch.randn(1, 32, generator=gen),
                                                    "guidance": 3.5}]]


@pytest.fixture(scope="module")
def flux_env(env):
    if not comfy_host.is_current_host():
        pytest.skip("ComfyUI's Flux needs a current ComfyUI: set COMFYUI_PATH to run the Flux MODEL rows")
    if not hasattr(env, "flux"):
        env.flux = stand_ins.tiny_flux()
        env.flux_vae = comfy_host.tiny_vae(latent_channels=16)
        env.flux_union_vae = with_vae(env, env.flux_union)
        wide = tiny_flux_controlnet(in_channels=64, joint_attention_dim=48)
        name = env.write("flux-wide-text.safetensors", safetensors_bytes(_sd(wide)))
        env.flux_wide_text = with_vae(env, comfy_host.run_node(LOADER, control_net_name=name)[0])
        env.flux_pos, env.flux_neg = _flux_conditioning(1), _flux_conditioning(2)
        comfy_host.sample(env.flux, env.flux_pos, env.flux_neg, steps=1, latent=LATENT, cfg=1.0)
    return env


def on_flux(net="flux_union_vae", **overrides):
    return lambda e: {"model": e.flux, "controlnet": getattr(e, net), "image": torch.rand(1, 64, 48, 3),
                      **overrides}


def sampled_flux(e, out):
    return (comfy_host.sample(out[0], e.flux_pos, e.flux_neg, steps=1, latent=LATENT, cfg=1.0),)


FLUX_MODEL_CASES = [
    refused("a latent-hint ControlNet without CNR_HintVAE", APPLY, on_flux("flux_union"), "controlnet",
            "CNR_HintVAE"),
    refused("block_weights of 3 values for 2 + 2 blocks", APPLY, on_flux(block_weights="1,1,1"), "block_weights",
            "4", "double blocks"),
    refused("block_weights of 1e30", APPLY, on_flux(block_weights="1,1,1,1e30"), "block_weights", "100"),
    refused("block_weights with NaN", APPLY, on_flux(block_weights="1,nan,1,1"), "block_weights", "finite"),
    refused("a soft control mode", APPLY, on_flux(control_mode="my prompt is more important"), "control_mode",
            "balanced"),
    refused("the other soft control mode", APPLY, on_flux(control_mode="controlnet is more important"),
            "control_mode", "balanced"),
    refused("an SDXL Union on a Flux model", APPLY, lambda e: {"model": e.flux, "controlnet": e.controlnet,
                                                               "image": HINT}, "controlnet", "Flux"),
    refused("a ControlNet made for wider text tokens", APPLY, on_flux("flux_wide_text"), "controlnet",
            "48-wide text", "32"),
    safe("a pixel-hint (XLabs) ControlNet, which needs no CNR_HintVAE", APPLY, on_flux("flux_xlabs"),
         then=sampled_flux),
    safe("block_weights at the bound", APPLY, on_flux(block_weights="100,-100,0,1"), then=sampled_flux),
    safe("a control image of another aspect", APPLY, on_flux(image=torch.rand(1, 30, 90, 3)), then=sampled_flux),
]


@pytest.mark.parametrize("case", FLUX_MODEL_CASES, ids=case_ids(FLUX_MODEL_CASES))
def test_bad_inputs_with_a_flux_model_are_refused_or_safe(flux_env, case):
    check_case(flux_env, case)
