"""Bad input around T2I-Adapters: damaged adapter files and the Apply node with an adapter."""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import (APPLY, HINT, LOADER, _nan_data, case_ids, check_case, cut_in_half, file_case, refused, safe,
                       with_filled)
from test_integration_t2i import UNETS, _conditioning
from tiny_t2i import tiny_adapter, to_original

pytestmark = pytest.mark.comfy

FEATURE = "body.0.block1.weight"


def _adapter_sd(kind: str):
    return to_original({k: v.contiguous() for k, v in tiny_adapter(kind, seed=4).state_dict().items()}, kind)


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "adapter"):
        e.adapter_weights = _adapter_sd("full_adapter")
        e.unets = {kind: comfy_host.tiny_unet(seed=2, **cfg) for kind, cfg in UNETS.items()}
        for kind in UNETS:
            e.write(f"bad-input-{kind}.safetensors", safetensors_bytes(_adapter_sd(kind)))
        e.adapter = comfy_host.run_node(LOADER, control_net_name="bad-input-full_adapter.safetensors")[0]
        e.adapter_xl = comfy_host.run_node(LOADER, control_net_name="bad-input-full_adapter_xl.safetensors")[0]
        e.t2i_cond = (_conditioning(1, False), _conditioning(2, False))
        comfy_host.sample(e.unets["full_adapter"], *e.t2i_cond, steps=1)
    return e


def apply_adapter(**overrides):
    return lambda e: {"model": e.unets["full_adapter"], "controlnet": e.adapter, "image": HINT, **overrides}


def sampled(latent=None):
    def run(e, out):
        return (comfy_host.sample(out[0], *e.t2i_cond, steps=1, latent=latent),)
    return run


FILE_CASES = [
    file_case("adapter cut in half", "t2i-half.safetensors",
              cut_in_half(lambda e: e.adapter_weights), "truncated"),
    file_case("adapter with a NaN weight", "t2i-nan.safetensors",
              with_filled(lambda e: e.adapter_weights, FEATURE, float("nan")), "NaN", FEATURE),
    file_case("adapter whose levels skip a number", "t2i-gap.safetensors",
              lambda e: safetensors_bytes({k.replace("body.2.", "body.9.", 1): v
                                           for k, v in e.adapter_weights.items()}), "fits no level"),
    file_case("adapter missing a block's weight", "t2i-missing.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.adapter_weights.items() if k != FEATURE}), "missing"),
    file_case("adapter tensor of the wrong shape", "t2i-shape.safetensors",
              lambda e: safetensors_bytes({**e.adapter_weights, FEATURE: torch.zeros(3, 3, 1, 1)}), "shape"),
    file_case("adapter keys without tensors, refused before data", "t2i-nan-only.safetensors",
              lambda e: _nan_data(["body.0.resnets.0.block1.weight", "conv_in.weight"]), ""),
]

APPLY_CASES = [
    refused("an SDXL adapter on an SD1.5 model", APPLY,
            lambda e: {"model": e.unets["full_adapter"], "controlnet": e.adapter_xl, "image": HINT}, "controlnet",
            "SDXL T2I-Adapter", "SD15"),
    refused("an SD1.5 adapter on an SDXL model", APPLY,
            lambda e: {"model": e.unets["full_adapter_xl"], "controlnet": e.adapter, "image": HINT}, "controlnet",
            "T2I-Adapter", "SDXL"),
    refused("an SD1.5 adapter on the tiny SD1.5 model of other widths", APPLY,
            lambda e: {"model": e.model, "controlnet": e.adapter, "image": HINT}, "controlnet", "channels"),
    refused("block_weights of 13 values for 4 features", APPLY, apply_adapter(block_weights=",".join(["1"] * 13)),
            "block_weights", "4"),
    refused("block_weights of 1e30", APPLY, apply_adapter(block_weights="1e30,1,1,1"), "block_weights", "100"),
    refused("block_weights with inf", APPLY, apply_adapter(block_weights="1,inf,1,1"), "block_weights"),
    refused("block_weights with a word", APPLY, apply_adapter(block_weights="1,1,one,1"), "block_weights"),
    safe("soft curve on an adapter", APPLY, apply_adapter(control_mode="my prompt is more important"),
         then=sampled()),
    safe("an SDXL adapter on a latent with odd sides", APPLY,
         lambda e: {"model": e.unets["full_adapter_xl"], "controlnet": e.adapter_xl, "image": HINT},
         then=lambda e, out: (comfy_host.sample(out[0], _conditioning(1, True), _conditioning(2, True), steps=1,
                                                latent=torch.zeros(1, 4, 9, 7)),)),
    safe("an adapter with a hint of another aspect", APPLY, apply_adapter(image=torch.rand(1, 40, 96, 3)),
         then=sampled()),
]

CASES = FILE_CASES + APPLY_CASES


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_bad_t2i_adapter_inputs_are_refused_or_safe(env, case):
    check_case(env, case)
