"""Bad input around a ControlNet Union: CNR_UnionType's choices and images, and the Apply node on a Union."""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import APPLY, HINT, INF, NAN, _rand, _with, case_ids, check_case, refused, safe
from test_integration_union import NEG, POS, _union_file

pytestmark = pytest.mark.comfy

UNION = "CNR_UnionType"


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "union"):
        e.sdxl = comfy_host.tiny_unet(sdxl=True)
        name = e.write("union6.safetensors", safetensors_bytes(_union_file(6)))
        e.union = comfy_host.run_node("CNR_ControlNetLoader", control_net_name=name)[0]
        e.chosen = comfy_host.run_node(UNION, controlnet=e.union, type="openpose")[0]
        comfy_host.sample(e.sdxl, POS, NEG, steps=1)  # the first sampling's set-up stays out of the timed rows
    return e


def choose(**overrides):
    return lambda e: {"controlnet": e.union, "type": "openpose", **overrides}


def apply_union(**overrides):
    return lambda e: {"model": e.sdxl, "controlnet": e.chosen, "image": HINT, **overrides}


def sampled_sdxl(batch: int = 1):
    def run(e, out):
        patched = comfy_host.run_node(APPLY, model=e.sdxl, controlnet=out[0], image=HINT)[0]
        pos, neg = (POS, NEG) if batch == 1 else ([[c[0].repeat(batch, 1, 1), c[1]] for c in POS],
                                                  [[c[0].repeat(batch, 1, 1), c[1]] for c in NEG])
        return (comfy_host.sample(patched, pos, neg, steps=1, latent=torch.zeros(batch, 4, 8, 8)),)
    return run


def sampled_apply(e, out):
    return (comfy_host.sample(out[0], POS, NEG, steps=1),)


def types_are(*types):
    def check(e, out, inputs):
        assert out[0].control_type == types
    return check


UNION_CASES = [
    refused("a classic ControlNet", UNION, lambda e: {"controlnet": e.controlnet, "type": "openpose"}, "controlnet",
            "not a ControlNet Union"),
    refused("a type no Union has, over a link", UNION, choose(type="sketch"), "type", "sketch"),
    refused("a ProMax type on a 6-type file", UNION, choose(type="tile"), "type", "ProMax"),
    refused("a ProMax type_2 on a 6-type file", UNION, choose(type_2="repaint", image_2=HINT), "type_2", "ProMax"),
    refused("type_2 without image_2", UNION, choose(type_2="depth"), "image_2"),
    refused("image_2 without type_2", UNION, choose(image_2=HINT), "type_2"),
    refused("type_3 without image_3", UNION, choose(type_3="depth"), "image_3"),
    refused("image_3 without type_3", UNION, choose(image_3=HINT), "type_3"),
    refused("type_3 unknown over a link", UNION, choose(type_3=3, image_3=HINT), "type_3"),
    refused("image_2 with NaN", UNION, choose(type_2="depth", image_2=_with(HINT, (0, 5, 5, 0), NAN)), "image_2",
            "finite"),
    refused("image_3 with inf", UNION, choose(type_3="depth", image_3=_with(HINT, (0, 5, 5, 1), INF)), "image_3"),
    refused("image_2 with two channels", UNION, choose(type_2="depth", image_2=HINT[..., :2]), "image_2",
            "2 channels"),
    refused("image_2 empty", UNION, choose(type_2="depth", image_2=HINT[:, :0]), "image_2"),
    refused("image_2 batch 2 beside image_3 batch 3", UNION,
            choose(type_2="depth", image_2=HINT.repeat(2, 1, 1, 1), type_3="normal", image_3=HINT.repeat(3, 1, 1, 1)),
            "image_2/image_3", "batch"),
    refused("image_2 batch 3 for a latent batch of 2", UNION, choose(type_2="depth", image_2=HINT.repeat(3, 1, 1, 1)),
            "image_2", "3", then=sampled_sdxl(batch=2)),
    safe("grey image_2", UNION, choose(type_2="depth", image_2=_rand(1, 64, 64, 1, seed=8)), types_are(0, 1)),
    safe("RGBA image_3 and no second type", UNION, choose(type_3="canny/lineart/anime_lineart/mlsd",
                                                          image_3=_rand(1, 64, 64, 4, seed=9)), types_are(0, 3)),
    safe("the same type twice", UNION, choose(type_2="openpose", image_2=HINT), types_are(0, 0)),
    safe("image_2 batch 1 beside image_3 batch 2", UNION,
         choose(type_2="depth", image_2=HINT, type_3="normal", image_3=HINT.repeat(2, 1, 1, 1)), types_are(0, 1, 4)),
]

APPLY_UNION_CASES = [
    refused("a Union whose types were never chosen", APPLY, lambda e: {"model": e.sdxl, "controlnet": e.union,
                                                                       "image": HINT}, "controlnet", "CNR_UnionType"),
    refused("an SDXL Union on an SD1.5 model", APPLY, lambda e: {"model": e.model, "controlnet": e.chosen,
                                                                 "image": HINT}, "controlnet", "SDXL"),
    refused("block_weights of 13 values for SDXL's 10", APPLY, apply_union(block_weights=",".join(["1"] * 13)),
            "block_weights", "10"),
    refused("block_weights of 1e30", APPLY, apply_union(block_weights=",".join(["1e30"] * 10)), "block_weights",
            "100"),
    refused("block_weights with NaN", APPLY, apply_union(block_weights=",".join(["1"] * 9 + ["nan"])),
            "block_weights", "finite"),
    refused("block_weights in words", APPLY, apply_union(block_weights="one, two"), "block_weights", "numbers"),
    safe("block_weights at the bound", APPLY, apply_union(block_weights=",".join(["100"] * 9 + ["-100"])),
         then=sampled_apply),
    safe("soft curve on a Union", APPLY, apply_union(control_mode="my prompt is more important"), then=sampled_apply),
]


@pytest.mark.parametrize("case", UNION_CASES + APPLY_UNION_CASES, ids=case_ids(UNION_CASES + APPLY_UNION_CASES))
def test_bad_union_inputs_are_refused_or_safe(env, case):
    check_case(env, case)
