"""Bad input to CNR_InpaintMaskPrep (see tests/bad_input.py)."""
import pytest
import torch

import comfy_host
from bad_input import (GREY, INF, NAN, PREP, PREP_IMAGE, PREP_MASK, _rand, _with, case_ids, check_case, refused, safe)

pytestmark = pytest.mark.comfy




def prep_inputs(**overrides):
    return lambda e: {"image": PREP_IMAGE, "mask": PREP_MASK, "vae": e.vae, **overrides}


def prep_shapes(h=64, w=64, check=None):
    def verify(e, out, inputs):
        latent, sample_mask, paste_mask, masked, _, _ = out
        assert latent["samples"].shape == (1, 4, h // 8, w // 8)
        assert latent["noise_mask"].shape == (1, 1, h // 8, w // 8)
        assert sample_mask.shape == paste_mask.shape == (1, h, w) and masked.shape == (1, h, w, 3)
        assert float(paste_mask.max()) <= 1.0 and float(paste_mask.min()) >= 0.0
        if check is not None:
            check(out, inputs)
    return verify


def prep_same_as(**overrides):
    def check(e, out, inputs):
        expected = comfy_host.run_node(PREP, **{**inputs, **overrides})
        assert torch.equal(out[0]["samples"], expected[0]["samples"]) and torch.equal(out[3], expected[3])
    return check


def all_masked(out, inputs):
    assert bool((out[1] == 1).all())


def none_masked(out, inputs):
    assert not bool(out[1].any())


PREP_CASES = [
    refused("threshold NaN", PREP, prep_inputs(threshold=NAN), "threshold", "finite"),
    refused("grow beyond its range over a link", PREP, prep_inputs(grow=5000), "grow", "-256..256"),
    refused("feather negative over a link", PREP, prep_inputs(feather=-4), "feather"),
    refused("fill unknown", PREP, prep_inputs(fill="blue"), "fill", "grey"),
    refused("image with one inf pixel", PREP, prep_inputs(image=_with(PREP_IMAGE, (0, 1, 1, 0), INF)), "image"),
    refused("mask with NaN", PREP, prep_inputs(mask=_with(PREP_MASK, (0, 0), NAN)), "mask", "NaN"),
    refused("image 60x60, not a multiple of 8", PREP, prep_inputs(image=PREP_IMAGE[:, :60, :60],
                                                                  mask=PREP_MASK[:60, :60]), "image", "60x60"),
    refused("mask of another size", PREP, prep_inputs(mask=torch.ones(32, 48)), "mask", "48x32", "64x64"),
    refused("mask batch 3 for image batch 2", PREP, prep_inputs(image=PREP_IMAGE.repeat(2, 1, 1, 1),
                                                                mask=torch.ones(3, 64, 64)), "mask", "3", "2"),
    safe("grey image is the grey repeated to RGB", PREP, prep_inputs(image=GREY),
         prep_same_as(image=GREY.repeat(1, 1, 1, 3))),
    safe("RGBA image is its RGB", PREP, prep_inputs(image=torch.cat([PREP_IMAGE, GREY], -1)),
         prep_same_as(image=PREP_IMAGE)),
    safe("grow beyond the image", PREP, prep_inputs(grow=256), prep_shapes(check=all_masked)),
    safe("erode beyond the image", PREP, prep_inputs(grow=-256), prep_shapes(check=none_masked)),
    safe("feather beyond the image", PREP, prep_inputs(feather=256, feather_sampling=True), prep_shapes()),
    safe("mask painted to the border survives erosion", PREP, prep_inputs(mask=torch.ones(64, 64), grow=-5),
         prep_shapes(check=all_masked)),
    safe("8x8 image, one pixel masked, radii beyond it", PREP,
         prep_inputs(image=PREP_IMAGE[:, :8, :8], mask=_with(torch.zeros(8, 8), (7, 7), 1.0), grow=256, feather=256),
         prep_shapes(8, 8, check=all_masked)),
    safe("8x4096 strip, feather 256", PREP,
         prep_inputs(image=_rand(1, 8, 4096, 3), mask=torch.ones(8, 4096), feather=256), prep_shapes(8, 4096)),
]


@pytest.mark.parametrize("case", PREP_CASES, ids=case_ids(PREP_CASES))
def test_bad_inpaint_prep_inputs_are_refused_or_safe(bad_input_env, case):
    check_case(bad_input_env, case)
