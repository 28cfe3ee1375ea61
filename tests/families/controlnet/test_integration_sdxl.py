"""An SDXL-shaped ControlNet (9 + 1 residuals, y vector) against ComfyUI's own, on a tiny SDXL UNet."""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host

pytestmark = pytest.mark.comfy

HINT = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(7))


def _conditioning(seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, 7, 32, generator=gen), {"pooled_output": torch.randn(1, 1280, generator=gen)}]]


POS, NEG = _conditioning(1), _conditioning(2)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    nodes = comfy_host.boot()
    import folder_paths
    model = comfy_host.tiny_unet(sdxl=True)
    gen = torch.Generator().manual_seed(3)
    import comfy.cldm.cldm
    unet_only = ("out_channels", "transformer_depth_output")
    cfg = {k: v for k, v in comfy_host.TINY_SDXL_CONFIG.items() if k not in unet_only}
    keys = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="meta", **cfg).state_dict()
    weights = {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in keys.items()}
    native = comfy_host.native_controlnet(weights, sdxl=True)
    folder = tmp_path_factory.mktemp("controlnet_sdxl")
    save_file(weights, str(folder / "tiny_sdxl_cn.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load("tiny_sdxl_cn.safetensors")[0]
    return nodes, model, native, ours


def test_sdxl_controlnet_matches_comfyui_native_with_the_y_vector(setup):
    nodes, model, native, ours = setup
    assert ours.net.config.family == "sdxl" and ours.net.config.num_down_residuals == 9
    pos, neg = nodes.ControlNetApplyAdvanced().apply_controlnet(POS, NEG, native, HINT, 0.9, 0.0, 1.0)[:2]
    expected = comfy_host.sample(model, pos, neg, steps=4)
    (patched,) = comfy_host.run_node("CNR_ApplyControlResiduals", model=model, controlnet=ours, image=HINT,
                                     strength=0.9, window_timing="model sigma (ComfyUI)")
    got = comfy_host.sample(patched, POS, NEG, steps=4)
    plain = comfy_host.sample(model, POS, NEG, steps=4)
    assert (expected - plain).abs().max() > 1e-2
    # Random weights drive this latent to |x| ~ 250, where float32 rounding alone is ~3e-5 per operation.
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-4)
