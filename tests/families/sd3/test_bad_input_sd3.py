"""Bad input around SD3 / SD3.5 ControlNets: damaged and unknown files, CNR_HintVAE, and the Apply node.

The rows with an SD3 MODEL need a current ComfyUI (COMFYUI_PATH); the others run on every host.
"""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import APPLY, HINT, LOADER, case_ids, check_case, cut_in_half, file_case, refused, safe, with_filled
from test_sd3_comfyui import _image, conditioning, instantx_state_dict, sample, sd35_state_dict, tiny_sd3_model

pytestmark = pytest.mark.comfy

HINT_VAE = "CNR_HintVAE"
DEPTH, LAYERS = 4, 2
BLOCK = "controlnet_blocks.0.weight"


def _contiguous(sd):
    return {k: v.contiguous() for k, v in sd.items()}


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "sd3_instantx"):
        e.instantx_weights = _contiguous(instantx_state_dict(DEPTH, LAYERS))
        e.sd35_weights = _contiguous(sd35_state_dict(DEPTH, LAYERS, control_type=1))
        for name, weights in (("sd3-instantx.safetensors", e.instantx_weights),
                              ("sd35-canny.safetensors", e.sd35_weights)):
            e.write(name, safetensors_bytes(weights))
        e.sd3_instantx = comfy_host.run_node(LOADER, control_net_name="sd3-instantx.safetensors")[0]
        e.sd35 = comfy_host.run_node(LOADER, control_net_name="sd35-canny.safetensors")[0]
    return e


def sd35_with_type(value):
    return lambda e: safetensors_bytes({**e.sd35_weights, "control_type": torch.tensor([value])})


FILE_CASES = [
    file_case("SD3.5 ControlNet of control type 7", "sd35-type7.safetensors", sd35_with_type(7), "control type 7",
             "blur", "canny", "depth"),
    file_case("SD3.5 ControlNet of control type -1", "sd35-type-1.safetensors", sd35_with_type(-1), "control type"),
    file_case("SD3.5 ControlNet of control type 1.5", "sd35-type15.safetensors", sd35_with_type(1.5),
             "control type 1.5"),
    file_case("InstantX ControlNet cut in half", "sd3-half.safetensors",
             cut_in_half(lambda e: e.instantx_weights), "truncated"),
    file_case("InstantX ControlNet with an infinite weight", "sd3-inf.safetensors",
             with_filled(lambda e: e.instantx_weights, BLOCK, float("inf")), "infinite"),
    file_case("InstantX ControlNet missing its last output projection", "sd3-noproj.safetensors",
             lambda e: safetensors_bytes({k: v for k, v in e.instantx_weights.items()
                                          if not k.startswith(f"controlnet_blocks.{LAYERS - 1}.")}), "blocks"),
    file_case("SD3.5 ControlNet missing its last block", "sd35-gap.safetensors",
             lambda e: safetensors_bytes({k: v for k, v in e.sd35_weights.items()
                                          if not k.startswith(f"transformer_blocks.{LAYERS - 1}.")}), "fit"),
]

HINT_VAE_CASES = [
    refused("an SD VAE (4 latent channels) for an InstantX ControlNet", HINT_VAE,
            lambda e: {"controlnet": e.sd3_instantx, "vae": e.vae}, "vae", "4-channel", "16-channel"),
    refused("an SD VAE (4 latent channels) for an SD3.5 ControlNet", HINT_VAE,
            lambda e: {"controlnet": e.sd35, "vae": e.vae}, "vae", "4-channel"),
]

APPLY_CASES = [
    refused("an SD3 ControlNet on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.sd3_instantx, "image": HINT}, "controlnet", "SD3", "SD15"),
    refused("an SD3.5 ControlNet on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.sd35, "image": HINT}, "controlnet", "SD3"),
]


@pytest.mark.parametrize("case", FILE_CASES + HINT_VAE_CASES + APPLY_CASES,
                         ids=case_ids(FILE_CASES + HINT_VAE_CASES + APPLY_CASES))
def test_bad_sd3_inputs_are_refused_or_safe_on_every_host(env, case):
    check_case(env, case)


# ---- with an SD3 MODEL (a current ComfyUI) ----------------------------------------------------------------

@pytest.fixture(scope="module")
def sd3_env(env):
    if not comfy_host.is_current_host():
        pytest.skip("ComfyUI's SD3 needs a current ComfyUI: set COMFYUI_PATH to run the SD3 MODEL rows")
    if not hasattr(env, "sd3"):
        env.sd3 = tiny_sd3_model(DEPTH)
        env.sd3_vae = comfy_host.tiny_vae(latent_channels=16)
        env.sd3_instantx_vae = comfy_host.run_node(HINT_VAE, controlnet=env.sd3_instantx, vae=env.sd3_vae)[0]
        env.sd35_vae = comfy_host.run_node(HINT_VAE, controlnet=env.sd35, vae=env.sd3_vae)[0]
        env.sd3_pos, env.sd3_neg = conditioning(1), conditioning(2)
        sample(env.sd3, env.sd3_pos, env.sd3_neg, steps=1)
    return env


def on_sd3(net="sd3_instantx_vae", **overrides):
    return lambda e: {"model": e.sd3, "controlnet": getattr(e, net), "image": _image(), **overrides}


def sampled_sd3(e, out):
    return (sample(out[0], e.sd3_pos, e.sd3_neg, steps=1),)


SD3_MODEL_CASES = [
    refused("an InstantX ControlNet without CNR_HintVAE", APPLY, on_sd3("sd3_instantx"), "controlnet",
            "CNR_HintVAE"),
    refused("an SD3.5 ControlNet without CNR_HintVAE", APPLY, on_sd3("sd35"), "controlnet", "CNR_HintVAE"),
    refused("block_weights of 3 values for 2 blocks", APPLY, on_sd3(block_weights="1,1,1"), "block_weights",
            "2 ControlNet blocks"),
    refused("block_weights of -1e30", APPLY, on_sd3(block_weights="1,-1e30"), "block_weights", "100"),
    refused("block_weights with inf", APPLY, on_sd3(block_weights="inf,1"), "block_weights", "finite"),
    refused("a soft control mode", APPLY, on_sd3(control_mode="my prompt is more important"), "control_mode",
            "balanced"),
    refused("a classic SD ControlNet on an SD3 model", APPLY,
            lambda e: {"model": e.sd3, "controlnet": e.controlnet, "image": HINT}, "controlnet", "SD3"),
    safe("an SD3.5 ControlNet with block weights at the bound", APPLY, on_sd3("sd35_vae", block_weights="100,-100"),
         then=sampled_sd3),
    safe("an InstantX ControlNet with a control image of another aspect", APPLY,
         on_sd3(image=torch.rand(1, 40, 120, 3)), then=sampled_sd3),
]


@pytest.mark.parametrize("case", SD3_MODEL_CASES, ids=case_ids(SD3_MODEL_CASES))
def test_bad_inputs_with_an_sd3_model_are_refused_or_safe(sd3_env, case):
    check_case(sd3_env, case)
