"""Bad input to CNR_ApplyControlResiduals on a UNet model (see tests/bad_input.py)."""
import pytest
import torch

import comfy_host
from bad_input import (APPLY, GREY, HINT, INF, NAN, _rand, _with, case_ids, check_case, refused, safe)

pytestmark = pytest.mark.comfy


def apply_inputs(**overrides):
    return lambda e: {"model": e.model, "controlnet": e.controlnet, "image": HINT, **overrides}


def sampled(batch: int = 1):
    """Sample with the node's MODEL: errors known only once the latent exists surface here."""
    return lambda e, out: (e.sample(out[0], batch),)


def same_as_sampling_with(**overrides):
    """Bit-exact: the sampled latent equals sampling with the node given ``overrides`` instead."""
    def check(e, out, inputs):
        (patched,) = comfy_host.run_node(APPLY, **{**inputs, **overrides})
        assert out[0].shape == (1, 4, 8, 8)
        assert torch.equal(out[0], e.sample(patched))
    return check


def returns_model_unchanged(e, out, inputs):
    assert out[0] is inputs["model"]


def finite_latent(batch: int = 1):
    def check(e, out, inputs):
        assert out[0].shape == (batch, 4, 8, 8)
    return check


APPLY_CASES = [
    refused("strength NaN", APPLY, apply_inputs(strength=NAN), "strength", "finite"),
    refused("strength +inf", APPLY, apply_inputs(strength=INF), "strength", "finite"),
    refused("strength -inf", APPLY, apply_inputs(strength=-INF), "strength"),
    refused("strength beyond its range over a link", APPLY, apply_inputs(strength=25.0), "strength", "0.0..10.0"),
    refused("start_percent NaN", APPLY, apply_inputs(start_percent=NAN), "start_percent"),
    refused("end_percent NaN", APPLY, apply_inputs(end_percent=NAN), "end_percent"),
    refused("start after end", APPLY, apply_inputs(start_percent=0.8, end_percent=0.2), "start_percent"),
    refused("soft_base NaN", APPLY, apply_inputs(soft_base=NAN), "soft_base"),
    refused("uncond_multiplier inf", APPLY, apply_inputs(uncond_multiplier=INF), "uncond_multiplier"),
    refused("control_mode unknown", APPLY, apply_inputs(control_mode="strong"), "control_mode", "balanced"),
    refused("block_weights holds nan", APPLY, apply_inputs(block_weights="1,1,1,1,1,1,1,1,1,1,1,1,nan"),
            "block_weights", "finite"),
    refused("block_weights holds inf", APPLY, apply_inputs(block_weights="inf," + "1," * 11 + "1"), "block_weights"),
    refused("block_weights not numbers", APPLY, apply_inputs(block_weights="1, 2, three"), "block_weights"),
    refused("block_weights too few", APPLY, apply_inputs(block_weights="1, 2"), "block_weights", "13"),
    refused("image with one NaN pixel", APPLY, apply_inputs(image=_with(HINT, (0, 5, 5, 1), NAN)), "image", "NaN"),
    refused("image with two channels", APPLY, apply_inputs(image=HINT[..., :2]), "image", "2 channels"),
    refused("image without a batch dimension", APPLY, apply_inputs(image=HINT[0]), "image", "[B,H,W,C]"),
    refused("mask with inf", APPLY, apply_inputs(mask=_with(torch.ones(64, 64), (3, 3), INF)), "mask"),
    refused("inpaint_mask with NaN", APPLY, apply_inputs(inpaint_mask=torch.full((1, 64, 64), NAN)), "inpaint_mask"),
    refused("mask batch 2 for image batch 3", APPLY, apply_inputs(image=HINT.repeat(3, 1, 1, 1),
                                                                  mask=torch.ones(2, 64, 64)), "mask", "3", "2"),
    refused("inpaint_mask batch 2 for image batch 3", APPLY,
            apply_inputs(image=HINT.repeat(3, 1, 1, 1), inpaint_mask=torch.ones(2, 64, 64)), "inpaint_mask", "3", "2"),
    refused("image batch 3 for latent batch 2", APPLY, apply_inputs(image=HINT.repeat(3, 1, 1, 1)), "image",
            "batch of 3", "has 2", then=sampled(batch=2)),
    refused("mask batch 3 for latent batch 2", APPLY, apply_inputs(mask=torch.ones(3, 64, 64)), "mask",
            "batch of 3", "has 2", then=sampled(batch=2)),
    safe("grey image is the grey repeated to RGB", APPLY, apply_inputs(image=GREY),
         same_as_sampling_with(image=GREY.repeat(1, 1, 1, 3)), then=sampled()),
    safe("RGBA image is its RGB", APPLY, apply_inputs(image=torch.cat([HINT, GREY], -1)),
         same_as_sampling_with(image=HINT), then=sampled()),
    safe("1x1 image", APPLY, apply_inputs(image=HINT[:, :1, :1]), finite_latent(), then=sampled()),
    safe("8x4096 image", APPLY, apply_inputs(image=_rand(1, 8, 4096, 3)), finite_latent(), then=sampled()),
    safe("13x17 image, not a multiple of 8", APPLY, apply_inputs(image=_rand(1, 13, 17, 3), resize_mode="fill"),
         finite_latent(), then=sampled()),
    safe("mask painted to the border equals no mask", APPLY, apply_inputs(mask=torch.ones(64, 64)),
         same_as_sampling_with(mask=None), then=sampled()),
    safe("strength 0 returns the model as it came", APPLY, apply_inputs(strength=0.0), returns_model_unchanged),
    safe("all-zero mask returns the model as it came", APPLY, apply_inputs(mask=torch.zeros(64, 64)),
         returns_model_unchanged),
    safe("one image for a latent batch of 2", APPLY, apply_inputs(), finite_latent(2), then=sampled(batch=2)),
    refused("latent_strengths not numbers", APPLY, apply_inputs(latent_strengths="0:half"), "latent_strengths",
            "'half' is not a number"),
    refused("latent_strengths range backwards", APPLY, apply_inputs(latent_strengths="3-1:0.5"), "latent_strengths",
            "smaller index"),
    refused("latent_strengths negative", APPLY, apply_inputs(latent_strengths="0:-1"), "latent_strengths", ">= 0"),
    refused("keyframes of another type", APPLY, apply_inputs(keyframes=[0.5]), "keyframes",
            "CNR_StrengthKeyframe"),
    refused("reuse_every 0", APPLY, apply_inputs(reuse_every=0), "reuse_every", "1..10"),
    refused("reuse_threshold NaN", APPLY, apply_inputs(reuse_threshold=NAN), "reuse_threshold", "finite"),
    refused("both reuse rules", APPLY, apply_inputs(reuse_every=2, reuse_threshold=0.1), "reuse_every/reuse_threshold",
            "choose one"),
    safe("latent_strengths beyond the batch are ignored", APPLY, apply_inputs(latent_strengths="0:1.0, 7:0.5"),
         same_as_sampling_with(latent_strengths=""), then=sampled()),
]


@pytest.mark.parametrize("case", APPLY_CASES, ids=case_ids(APPLY_CASES))
def test_bad_apply_inputs_are_refused_or_safe(bad_input_env, case):
    check_case(bad_input_env, case)
