"""The Apply node refuses a Flux ControlNet on a UNet MODEL with a message naming both sides and the fix.

Runs in the CI host (which has no Flux) and in a current ComfyUI.
"""
import pytest
import torch
from safetensors.torch import save_file

import comfy_host
from tiny_flux import tiny_flux_controlnet

pytestmark = pytest.mark.comfy


@pytest.fixture(scope="module")
def nodes(tmp_path_factory):
    nodes = comfy_host.boot()
    import folder_paths
    folder = tmp_path_factory.mktemp("flux_refusal")
    state = {k: v.contiguous() for k, v in tiny_flux_controlnet().state_dict().items()}
    save_file(state, str(folder / "flux_union_tiny.safetensors"))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    return nodes


def test_apply_refuses_a_flux_controlnet_on_an_sd15_model_naming_both_and_the_fix(nodes):
    loader = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]()
    control = loader.load("flux_union_tiny.safetensors")[0]
    apply = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]()
    image = torch.zeros(1, 64, 64, 3)
    with pytest.raises(ValueError) as err:
        apply.apply(comfy_host.tiny_unet(), control, image, 1.0, 0.0, 1.0, "balanced", "crop",
                    "executed steps (diffusers)")
    message = str(err.value)
    assert message.startswith("CNR_ApplyControlResiduals: controlnet: ")
    assert "FLUX ControlNet" in message and "SD15" in message and "use a FLUX model" in message
