"""Bad input around Control-LoRAs: damaged files and the Apply node completing one with the MODEL's UNet."""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import APPLY, HINT, LOADER, case_ids, check_case, cut_in_half, file_case, refused, safe
from test_integration_control_lora import _conditioning, _control_lora_file

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "control_lora"):
        e.lora_weights = _control_lora_file(e.model, sdxl=False, seed=3)
        e.lora_up = next(k for k in e.lora_weights if k.endswith(".up"))
        e.control_lora = comfy_host.run_node(
            LOADER, control_net_name=e.write("clora.safetensors", safetensors_bytes(e.lora_weights)))[0]
        e.sdxl_for_lora = comfy_host.tiny_unet(sdxl=True)
        sdxl_lora = _control_lora_file(e.sdxl_for_lora, sdxl=True, seed=4)
        e.control_lora_xl = comfy_host.run_node(
            LOADER, control_net_name=e.write("clora-xl.safetensors", safetensors_bytes(sdxl_lora)))[0]
        e.three_levels = comfy_host.tiny_unet(channel_mult=[1, 2, 2], transformer_depth=[1, 1, 1, 1, 0, 0],
                                              transformer_depth_output=[1, 1, 1, 1, 1, 1, 0, 0, 0])
        comfy_host.sample(e.model, _conditioning(1, False), _conditioning(2, False), steps=1)
    return e


def apply_lora(**overrides):
    return lambda e: {"model": e.model, "controlnet": e.control_lora, "image": HINT, **overrides}


def sampled(e, out):
    return (comfy_host.sample(out[0], _conditioning(1, False), _conditioning(2, False), steps=1),)


FILE_CASES = [
    file_case("Control-LoRA cut in half", "clora-half.safetensors",
              cut_in_half(lambda e: e.lora_weights), "truncated"),
    file_case("Control-LoRA with a NaN factor", "clora-nan.safetensors",
              lambda e: safetensors_bytes({**e.lora_weights, e.lora_up: torch.full_like(e.lora_weights[e.lora_up],
                                                                                        float("nan"))}), "NaN"),
    file_case("Control-LoRA with an up factor and no down", "clora-nodown.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.lora_weights.items()
                                           if k != e.lora_up.replace(".up", ".down")}), ""),
    file_case("Control-LoRA without its hint embedding", "clora-nohint.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.lora_weights.items()
                                           if not k.startswith("input_hint_block.")}), "input_hint_block"),
]

APPLY_CASES = [
    refused("an SDXL Control-LoRA on an SD1.5 model", APPLY,
            lambda e: {"model": e.model, "controlnet": e.control_lora_xl, "image": HINT}, "controlnet", "SDXL"),
    refused("an SD1.5 Control-LoRA on an SDXL model", APPLY,
            lambda e: {"model": e.sdxl_for_lora, "controlnet": e.control_lora, "image": HINT}, "controlnet", "SD"),
    refused("a Control-LoRA on a UNet of other depth", APPLY,
            lambda e: {"model": e.three_levels, "controlnet": e.control_lora, "image": HINT}, "controlnet",
            "Control-LoRA"),
    refused("block_weights of 10 values for SD1.5's 13", APPLY, apply_lora(block_weights=",".join(["1"] * 10)),
            "block_weights", "13"),
    refused("block_weights of 1e30", APPLY, apply_lora(block_weights=",".join(["1e30"] * 13)), "block_weights"),
    safe("a Control-LoRA at strength 0 leaves the model as it came", APPLY, apply_lora(strength=0.0),
         lambda e, out, inputs: None if out[0] is inputs["model"] else pytest.fail("the MODEL was cloned")),
    safe("a Control-LoRA with the soft curve", APPLY, apply_lora(control_mode="my prompt is more important"),
         then=sampled),
]

CASES = FILE_CASES + APPLY_CASES


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_bad_control_lora_inputs_are_refused_or_safe(env, case):
    check_case(env, case)
