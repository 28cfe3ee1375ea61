"""Bad input around latent inpainting ControlNets: CNR_InpaintControl, and the Apply node given such a
ControlNet (see tests/bad_input.py). An AliMama-style SD3 inpainting ControlNet (17-channel hint) stands in
for all three families: the node and the Apply node's checks are the same for each.

The rows with an SD3 MODEL need a current ComfyUI (COMFYUI_PATH); the others run on every host.
"""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import APPLY, INF, LOADER, NAN, _with, case_ids, check_case, refused, safe
from test_sd3_comfyui import _image, conditioning, instantx_state_dict, sample, tiny_sd3_model

pytestmark = pytest.mark.comfy

INPAINT, HINT_VAE = "CNR_InpaintControl", "CNR_HintVAE"
REFERENCE = "reference (binary mask, nearest, SD3 shift)"
HEIGHT, WIDTH = _image().shape[1:3]
MASK = torch.zeros(1, HEIGHT, WIDTH)
MASK[:, 16:48, 24:72] = 1.0


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "sd3_inpainting"):
        weights = {k: v.contiguous() for k, v in instantx_state_dict(4, 2, extra_channels=1).items()}
        e.write("sd3-inpainting.safetensors", safetensors_bytes(weights))
        e.write("sd3-plain.safetensors", safetensors_bytes({k: v.contiguous()
                                                            for k, v in instantx_state_dict(4, 2).items()}))
        e.sd3_inpainting = comfy_host.run_node(LOADER, control_net_name="sd3-inpainting.safetensors")[0]
        e.sd3_plain = comfy_host.run_node(LOADER, control_net_name="sd3-plain.safetensors")[0]
    return e


def inpaint_inputs(net="sd3_inpainting", **overrides):
    return lambda e: {"controlnet": getattr(e, net), "mask": MASK, "rule": REFERENCE, **overrides}


def carries_the_mask(shape):
    def check(e, out, inputs):
        assert out[0].inpaint_mask.shape == shape and out[0].inpaint_rule == "reference"
        assert out[0].net is inputs["controlnet"].net
    return check


NODE_CASES = [
    refused("on a classic SD ControlNet", INPAINT, inpaint_inputs("controlnet"), "controlnet",
            "not an inpainting ControlNet", "remove this node"),
    refused("on an SD3 ControlNet without a mask channel", INPAINT, inpaint_inputs("sd3_plain"), "controlnet",
            "SD3 ControlNet", "no mask channel"),
    refused("a mask with NaN", INPAINT, inpaint_inputs(mask=_with(MASK, (0, 3, 3), NAN)), "mask", "NaN"),
    refused("a mask with inf", INPAINT, inpaint_inputs(mask=_with(MASK, (0, 3, 3), INF)), "mask"),
    refused("an IMAGE given as the mask", INPAINT, inpaint_inputs(mask=_image()), "mask", "[B,H,W]"),
    refused("an unknown rule over a link", INPAINT, inpaint_inputs(rule="A1111"), "rule", "reference"),
    safe("one [H,W] mask", INPAINT, inpaint_inputs(mask=MASK[0]), carries_the_mask((1, HEIGHT, WIDTH))),
]


@pytest.mark.parametrize("case", NODE_CASES, ids=case_ids(NODE_CASES))
def test_bad_inpaint_control_inputs_are_refused_or_safe_on_every_host(env, case):
    check_case(env, case)


# ---- the Apply node with an SD3 MODEL (a current ComfyUI) --------------------------------------------------

@pytest.fixture(scope="module")
def sd3_env(env):
    if not comfy_host.is_current_host():
        pytest.skip("ComfyUI's SD3 needs a current ComfyUI: set COMFYUI_PATH to run the SD3 MODEL rows")
    if not hasattr(env, "inpaint_sd3"):
        env.inpaint_sd3 = tiny_sd3_model(4)
        env.sd3_inpainting_vae = comfy_host.run_node(HINT_VAE, controlnet=env.sd3_inpainting,
                                                     vae=comfy_host.tiny_vae(latent_channels=16))[0]
        env.inpaint_pos, env.inpaint_neg = conditioning(1), conditioning(2)
        sample(env.inpaint_sd3, env.inpaint_pos, env.inpaint_neg, steps=1)
    return env


def with_mask(mask):
    """The inpainting ControlNet through CNR_InpaintControl with ``mask``."""
    return lambda e: comfy_host.run_node(INPAINT, controlnet=e.sd3_inpainting_vae, mask=mask, rule=REFERENCE)[0]


def on_sd3(controlnet=with_mask(MASK), **overrides):
    return lambda e: {"model": e.inpaint_sd3, "controlnet": controlnet(e), "image": _image(), **overrides}


def sampled_sd3(batch=1):
    def step(e, out):
        import comfy.sample
        latent = torch.zeros(batch, 16, HEIGHT // 8, WIDTH // 8)
        pos, neg = conditioning(1), conditioning(2)
        pos[0][0], pos[0][1]["pooled_output"] = (pos[0][0].repeat(batch, 1, 1),
                                                 pos[0][1]["pooled_output"].repeat(batch, 1))
        neg[0][0], neg[0][1]["pooled_output"] = (neg[0][0].repeat(batch, 1, 1),
                                                 neg[0][1]["pooled_output"].repeat(batch, 1))
        noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
        return (comfy.sample.sample(out[0], noise, 1, 4.0, "euler", "normal", pos, neg, latent, seed=0,
                                    disable_pbar=True),)
    return step


def latent_of_batch(batch):
    def check(e, out, inputs):
        assert out[0].shape == (batch, 16, HEIGHT // 8, WIDTH // 8)
    return check


APPLY_CASES = [
    refused("an inpainting ControlNet without CNR_InpaintControl", APPLY, on_sd3(lambda e: e.sd3_inpainting_vae),
            "controlnet", "inpainting ControlNet", "CNR_InpaintControl"),
    refused("a mask of another size than the image", APPLY, on_sd3(with_mask(MASK[:, :32])), "image",
            "mask of CNR_InpaintControl", "same width and height"),
    refused("a mask batch of 2 for an image batch of 3", APPLY, on_sd3(with_mask(MASK.repeat(2, 1, 1)),
                                                                        image=_image().repeat(3, 1, 1, 1)),
            "image", "mask of CNR_InpaintControl 2", "image 3"),
    refused("the Apply node's own inpaint_mask on an inpainting ControlNet", APPLY,
            on_sd3(inpaint_mask=MASK), "inpaint_mask", "CNR_InpaintControl"),
    refused("a mask batch of 3 for a latent batch of 2", APPLY, on_sd3(with_mask(MASK.repeat(3, 1, 1))), "image",
            "batch of 3", "has 2", then=sampled_sd3(batch=2)),
    safe("a mask batch of 2 for one image and a latent batch of 2", APPLY, on_sd3(with_mask(MASK.repeat(2, 1, 1))),
         latent_of_batch(2), then=sampled_sd3(batch=2)),
    safe("an image and mask of twice the latent's size, fitted together", APPLY,
         on_sd3(with_mask(MASK.repeat_interleave(2, 1).repeat_interleave(2, 2)),
                image=torch.rand(1, 2 * HEIGHT, 2 * WIDTH, 3, generator=torch.Generator().manual_seed(3))),
         latent_of_batch(1), then=sampled_sd3()),
    safe("an image and mask of another aspect, fitted together by fill", APPLY,
         on_sd3(with_mask(MASK[:, :, :64]), image=_image()[:, :, :64], resize_mode="fill"),
         latent_of_batch(1), then=sampled_sd3()),
]


@pytest.mark.parametrize("case", APPLY_CASES, ids=case_ids(APPLY_CASES))
def test_bad_inputs_for_an_inpainting_controlnet_on_an_sd3_model_are_refused_or_safe(sd3_env, case):
    check_case(sd3_env, case)
