"""Bad input around Z-Image Fun ControlNets through CNR_ControlNetLoader: damaged, mixed and quantized files;
and the loader finds them in models/model_patches, where ComfyUI users keep them."""
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import LOADER, case_ids, check_case, cut_in_half, file_case, with_filled
from tiny_z_image import release_state_dict, tiny_controlnet, tiny_transformer

pytestmark = pytest.mark.comfy

SKIP = "control_layers.1.after_proj.weight"


@pytest.fixture(scope="module")
def env(bad_input_env):
    e = bad_input_env
    if not hasattr(e, "z_image_weights"):
        transformer = tiny_transformer()
        files = {v: release_state_dict(v, tiny_controlnet(v, transformer)) for v in ("1.0", "2.1")}
        e.z_image_weights = {v: {k: t.contiguous() for k, t in sd.items()} for v, sd in files.items()}
    return e


def _mixed(e):
    v1, v21 = e.z_image_weights["1.0"], e.z_image_weights["2.1"]
    return safetensors_bytes({**{k: v for k, v in v21.items() if not k.startswith("control_noise_refiner.")},
                              **{k: v for k, v in v1.items() if k.startswith("control_noise_refiner.")}})


def _quantized(e):
    weights = e.z_image_weights["2.1"]
    layer = "control_layers.0.attention.to_q"
    return safetensors_bytes({**weights, f"{layer}.comfy_quant": torch.zeros(8, dtype=torch.uint8),
                              f"{layer}.weight_scale": torch.ones(1)})


FILE_CASES = [
    file_case("Z-Image Fun 2.1 cut in half", "zimage-half.safetensors",
              cut_in_half(lambda e: e.z_image_weights["2.1"]), "truncated"),
    file_case("Z-Image Fun 2.1 holding NaN", "zimage-nan.safetensors",
              with_filled(lambda e: e.z_image_weights["2.1"], SKIP, float("nan")), "NaN", SKIP),
    file_case("Z-Image Fun 2.1 with v1's refiner", "zimage-mixed.safetensors", _mixed,
              "mixes two Z-Image Fun releases"),
    file_case("Comfy-Org int8 Z-Image Fun", "zimage-int8.safetensors", _quantized, "quantized",
              "Z-Image-Turbo-Fun-Controlnet-Union-2.1"),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=case_ids(FILE_CASES))
def test_bad_z_image_files_are_refused_naming_the_file(env, case):
    check_case(env, case)


def test_the_loader_lists_and_loads_files_in_model_patches(env, tmp_path):
    import folder_paths
    loader = comfy_host.boot().NODE_CLASS_MAPPINGS[LOADER]
    loader.INPUT_TYPES()  # registers models/model_patches on hosts without it
    folder_paths.add_model_folder_path("model_patches", str(tmp_path))
    (tmp_path / "zimage-tiny-2.1.safetensors").write_bytes(safetensors_bytes(env.z_image_weights["2.1"]))
    choices = loader.INPUT_TYPES()["required"]["control_net_name"][0]
    assert "zimage-tiny-2.1.safetensors" in choices
    control = comfy_host.run_node(LOADER, control_net_name="zimage-tiny-2.1.safetensors")[0]
    assert control.net.family == "z_image" and control.net.config.version == "2.1"
