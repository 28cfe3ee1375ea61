"""Bad input around Qwen-Image InstantX ControlNets: damaged files through CNR_ControlNetLoader, and the Apply node
given a Qwen-Image ControlNet on another model (or another ControlNet on a Qwen-Image MODEL).

The rows with a Qwen-Image or Flux MODEL need a current ComfyUI (COMFYUI_PATH); the others run on every host.
"""
import pytest
import torch
from diffusers import QwenImageControlNetModel
from safetensors.torch import save as safetensors_bytes

import comfy_host
import stand_ins
from bad_input import APPLY, HINT, LOADER, case_ids, check_case, cut_in_half, file_case, refused, safe, with_filled
from tiny_flux import tiny_xlabs_style_controlnet
from tiny_qwen import TINY, randomize_qwen

pytestmark = pytest.mark.comfy

HINT_VAE = "CNR_HintVAE"
PROJECTION = "controlnet_blocks.1.weight"
CHANNELS = 16  # the Wan-2.1 latent of a Qwen-Image MODEL
LATENT = torch.zeros(1, CHANNELS, 1, 8, 6)
# Sized for the tiny Qwen-Image MODEL below: 48-wide tokens (3 heads of 16), 16-wide text, 16 latent channels.
QWEN_SIZES = {**TINY, "in_channels": 4 * CHANNELS, "out_channels": CHANNELS}


def _qwen_controlnet_weights(seed=0, extra_condition_channels=0, **overrides):
    torch.manual_seed(seed)
    net = QwenImageControlNetModel(**{**QWEN_SIZES, **overrides}, num_layers=2,
                                   extra_condition_channels=extra_condition_channels)
    return {k: v.contiguous() for k, v in randomize_qwen(net, seed + 1).state_dict().items()}


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "qwen_union"):
        e.qwen_union_weights = _qwen_controlnet_weights()
        e.qwen_inpainting_weights = _qwen_controlnet_weights(seed=2, extra_condition_channels=4)
        names = {"qwen-union.safetensors": e.qwen_union_weights,
                 "qwen-narrow.safetensors": _qwen_controlnet_weights(seed=4, num_attention_heads=2)}
        loaded = [comfy_host.run_node(LOADER, control_net_name=e.write(name, safetensors_bytes(weights)))[0]
                  for name, weights in names.items()]
        e.qwen_union, e.qwen_narrow = loaded
        e.sdxl = comfy_host.tiny_unet(sdxl=True)
    return e


FILE_CASES = [
    file_case("Qwen-Image InstantX Union cut in half", "qwen-half.safetensors",
              cut_in_half(lambda e: e.qwen_union_weights), "truncated"),
    file_case("Qwen-Image InstantX Inpainting cut in half", "qwen-inpainting-half.safetensors",
              cut_in_half(lambda e: e.qwen_inpainting_weights), "truncated"),
    file_case("Qwen-Image ControlNet with a NaN weight", "qwen-nan.safetensors",
              with_filled(lambda e: e.qwen_union_weights, PROJECTION, float("nan")), "NaN", PROJECTION),
    file_case("Qwen-Image hint projection of the wrong width", "qwen-hint-width.safetensors",
              lambda e: safetensors_bytes({**e.qwen_union_weights,
                                           "controlnet_x_embedder.weight": torch.zeros(48, 40)}),
              "controlnet_x_embedder takes 40 channels", "64"),
    file_case("Qwen-Image ControlNet missing a residual projection", "qwen-noproj.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.qwen_union_weights.items()
                                           if not k.startswith("controlnet_blocks.1.")}), "residual projection"),
]

APPLY_CASES = [
    refused("a Qwen-Image ControlNet on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.qwen_union, "image": HINT}, "controlnet", "QWEN_IMAGE",
            "SD15"),
    refused("a Qwen-Image ControlNet on an SDXL model", APPLY,
            lambda e: {"model": e.sdxl, "controlnet": e.qwen_union, "image": HINT}, "controlnet", "QWEN_IMAGE",
            "SDXL"),
]


@pytest.mark.parametrize("case", FILE_CASES + APPLY_CASES, ids=case_ids(FILE_CASES + APPLY_CASES))
def test_bad_qwen_image_inputs_are_refused_or_safe_on_every_host(env, case):
    check_case(env, case)


# ---- with a Qwen-Image or Flux MODEL (a current ComfyUI) ----------------------------------------------------

def _conditioning(seed):
    return [[torch.randn(1, 5, TINY["joint_attention_dim"], generator=torch.Generator().manual_seed(seed)), {}]]


@pytest.fixture(scope="module")
def qwen_env(env):
    if not comfy_host.is_current_host():
        pytest.skip("ComfyUI's Qwen-Image needs a current ComfyUI: set COMFYUI_PATH to run the Qwen-Image MODEL rows")
    if not hasattr(env, "qwen"):
        from test_qwen_image_comfy_parity import _tiny_qwen_model
        env.qwen = _tiny_qwen_model(env.nodes, num_layers=3)
        env.flux = stand_ins.tiny_flux()
        env.wan_vae = stand_ins.tiny_wan_vae()
        env.qwen_union_vae = comfy_host.run_node(HINT_VAE, controlnet=env.qwen_union, vae=env.wan_vae)[0]
        name = env.write("flux-xlabs-for-qwen.safetensors",
                         safetensors_bytes({k: v.contiguous()
                                            for k, v in tiny_xlabs_style_controlnet().state_dict().items()}))
        env.flux_xlabs = comfy_host.run_node(LOADER, control_net_name=name)[0]
        env.qwen_pos, env.qwen_neg = _conditioning(1), _conditioning(2)
    return env


def on_qwen(net="qwen_union_vae", **overrides):
    return lambda e: {"model": e.qwen, "controlnet": getattr(e, net), "image": torch.rand(1, 64, 48, 3), **overrides}


def sampled_qwen(e, out):
    return (comfy_host.sample(out[0], e.qwen_pos, e.qwen_neg, steps=1, latent=LATENT, cfg=1.0),)


QWEN_MODEL_CASES = [
    refused("a Qwen-Image ControlNet on a Flux model", APPLY,
            lambda e: {"model": e.flux, "controlnet": e.qwen_union_vae, "image": HINT}, "controlnet", "QWEN_IMAGE",
            "Flux"),
    refused("a Flux ControlNet on a Qwen-Image model", APPLY, on_qwen("flux_xlabs"), "controlnet", "FLUX",
            "QwenImage"),
    refused("an SD1.5 ControlNet on a Qwen-Image model", APPLY, on_qwen("controlnet"), "controlnet", "QwenImage"),
    refused("a Qwen-Image ControlNet without CNR_HintVAE", APPLY, on_qwen("qwen_union"), "controlnet",
            "CNR_HintVAE"),
    refused("a Qwen-Image ControlNet of another width", APPLY, on_qwen("qwen_narrow"), "controlnet",
            "32-wide residuals", "48 wide"),
    refused("a soft control mode", APPLY, on_qwen(control_mode="my prompt is more important"), "control_mode",
            "balanced"),
    refused("block_weights of 3 values for 2 blocks", APPLY, on_qwen(block_weights="1,1,1"), "block_weights", "2"),
    safe("a control image of another aspect", APPLY, on_qwen(image=torch.rand(1, 30, 90, 3)), then=sampled_qwen),
]


@pytest.mark.parametrize("case", QWEN_MODEL_CASES, ids=case_ids(QWEN_MODEL_CASES))
def test_bad_inputs_with_a_qwen_image_model_are_refused_or_safe(qwen_env, case):
    check_case(qwen_env, case)
