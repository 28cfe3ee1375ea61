"""Bad input around the Qwen-Image Fun ControlNet: damaged files, CNR_HintVAE, CNR_QwenFunStrength and the Apply node
on a model of another family. None needs a Qwen-Image MODEL, so every row runs on every host."""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import APPLY, HINT, LOADER, case_ids, check_case, cut_in_half, file_case, refused, with_filled
from tiny_qwen_fun import DIM, fun_weights, tiny_fun_controlnet

pytestmark = pytest.mark.comfy

HINT_VAE, STRENGTH_CURVE = "CNR_HintVAE", "CNR_QwenFunStrength"
SKIP = "control_blocks.1.after_proj.weight"


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "qwen_fun"):
        e.qwen_fun_weights = fun_weights(tiny_fun_controlnet(depth=2, latent_channels=16))
        e.write("qwen-fun.safetensors", safetensors_bytes(e.qwen_fun_weights))
        e.qwen_fun = comfy_host.run_node(LOADER, control_net_name="qwen-fun.safetensors")[0]
    return e


FILE_CASES = [
    file_case("Fun ControlNet cut in half", "qwen-fun-half.safetensors",
              cut_in_half(lambda e: e.qwen_fun_weights), "truncated"),
    file_case("Fun ControlNet with a NaN skip projection", "qwen-fun-nan.safetensors",
              with_filled(lambda e: e.qwen_fun_weights, SKIP, float("nan")), "NaN", SKIP),
    file_case("Fun ControlNet whose hint projection has an even channel count", "qwen-fun-width.safetensors",
              lambda e: safetensors_bytes({**e.qwen_fun_weights, "control_img_in.weight": torch.zeros(DIM, 128)}),
              "control_img_in takes 128 features", "2 C + 1 channels"),
    file_case("Fun ControlNet missing a skip projection", "qwen-fun-noskip.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.qwen_fun_weights.items()
                                           if not k.startswith("control_blocks.1.after_proj.")}), "2 missing",
              "after_proj"),
]

NODE_CASES = [
    refused("an SD VAE (4 latent channels) for a Fun ControlNet", HINT_VAE,
            lambda e: {"controlnet": e.qwen_fun, "vae": e.vae}, "vae", "4-channel", "16-channel"),
    refused("the strength curve of an SD1.5 ControlNet", STRENGTH_CURVE,
            lambda e: {"controlnet": e.controlnet, "comfyui_sqrt": True}, "controlnet", "not a Qwen-Image Fun"),
    refused("a Fun ControlNet on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.qwen_fun, "image": HINT}, "controlnet", "QWEN_IMAGE",
            "SD15"),
    refused("a Fun ControlNet on an SDXL model", APPLY,
            lambda e: {"model": comfy_host.tiny_unet(sdxl=True), "controlnet": e.qwen_fun, "image": HINT},
            "controlnet", "QWEN_IMAGE", "SDXL"),
]


@pytest.mark.parametrize("case", FILE_CASES + NODE_CASES, ids=case_ids(FILE_CASES + NODE_CASES))
def test_bad_qwen_fun_inputs_are_refused_on_every_host(env, case):
    check_case(env, case)
