"""Z-Image Fun weights: version and sizes read from keys and shapes, damaged or mixed files refused clearly."""
import logging

import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import ControlNetFormatError, WeightFileError, load_controlnet
from cnr_pack.controlnet_core.families.z_image.format import claims_z_image
from cnr_pack.controlnet_core.families.z_image.model import default_places
from cnr_pack.controlnet_core.loading.registry import detect_format
from tiny_z_image import release_state_dict, tiny_controlnet, tiny_transformer


@pytest.fixture(scope="module")
def files():
    transformer = tiny_transformer()
    return {v: {k: t.contiguous() for k, t in release_state_dict(v, tiny_controlnet(v, transformer)).items()}
            for v in ("1.0", "2.0", "2.1", "2.1-lite")}


@pytest.mark.parametrize("version, layers, refiner, channels", [
    ("1.0", 2, "plain", 16), ("2.0", 4, "control_layers", 33), ("2.1", 4, "control_noise_refiner", 33),
    ("2.1-lite", 2, "control_noise_refiner", 33)])
def test_the_release_is_read_from_keys_and_shapes(files, version, layers, refiner, channels):
    cfg = load_controlnet(files[version]).config
    assert (len(cfg.places), cfg.refiner, cfg.hint_channels, cfg.hidden_size, cfg.num_heads, cfg.ffn_hidden,
            cfg.adaln_dim) == (layers, refiner, channels, 32, 2, 85, 32)
    assert cfg.family == "z_image"


def test_places_spread_the_control_layers_over_the_30_main_layers_unless_given(files):
    assert default_places(6) == (0, 5, 10, 15, 20, 25)
    assert default_places(15) == tuple(range(0, 30, 2))
    assert default_places(3) == (0, 10, 20)
    assert load_controlnet(files["2.1"]).config.places == (0, 7, 14, 21)
    assert load_controlnet(files["2.1"], places=(0, 1, 2, 3)).config.places == (0, 1, 2, 3)


def test_the_broken_2_0_release_loads_with_a_warning_naming_2_1(files, caplog):
    with caplog.at_level(logging.WARNING):
        load_controlnet(files["2.0"])
    assert "all zeros" in caplog.text and "Union-2.1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_controlnet(files["2.1"])
    assert "2.0" not in caplog.text


def test_the_file_is_claimed_by_the_z_image_row_from_its_embedder_key(files):
    assert claims_z_image(files["1.0"])
    assert detect_format(files["2.1"]).name.startswith("Z-Image Fun ControlNet")
    assert not claims_z_image({k: v for k, v in files["2.1"].items() if not k.startswith("control_all_x_embedder")})


def test_a_v1_refiner_with_a_2x_embedder_is_refused_as_mixed_releases(files):
    mixed = {**{k: v for k, v in files["2.1"].items() if not k.startswith("control_noise_refiner.")},
             **{k: v for k, v in files["1.0"].items() if k.startswith("control_noise_refiner.")}}
    with pytest.raises(ControlNetFormatError, match="mixes two Z-Image Fun releases"):
        load_controlnet(mixed)


def test_a_2x_refiner_with_a_v1_embedder_is_refused_as_mixed_releases(files):
    mixed = {**files["2.1"], "control_all_x_embedder.2-1.weight": files["1.0"]["control_all_x_embedder.2-1.weight"]}
    with pytest.raises(ControlNetFormatError, match="mixes two Z-Image Fun releases"):
        load_controlnet(mixed)


def test_a_control_layer_with_a_missing_block_number_is_refused(files):
    bad = {k: v for k, v in files["2.1"].items() if not k.startswith("control_layers.2.")}
    with pytest.raises(ControlNetFormatError, match=r"control_layers \[0, 1, 3\]: expected 0\.\.n-1"):
        load_controlnet(bad)


def test_a_context_width_no_release_has_is_refused(files):
    bad = dict(files["2.1"], **{"control_all_x_embedder.2-1.weight": torch.zeros(32, 80)})
    with pytest.raises(ControlNetFormatError, match=r"20-channel context; .* take 16 \(v1\) or 33 \(2\.x\)"):
        load_controlnet(bad)


def test_a_truncated_file_is_refused(files, tmp_path):
    path = tmp_path / "z_image_fun.safetensors"
    save_file(files["2.1"], str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - 1000])
    with pytest.raises(WeightFileError, match="truncated"):
        load_controlnet(str(path))


def test_a_file_holding_nan_is_refused_naming_the_tensor(files, tmp_path):
    path = tmp_path / "z_image_fun_nan.safetensors"
    broken = dict(files["2.1"])
    broken["control_layers.1.after_proj.weight"] = broken["control_layers.1.after_proj.weight"].clone()
    broken["control_layers.1.after_proj.weight"][0, 0] = float("nan")
    save_file(broken, str(path))
    with pytest.raises(WeightFileError, match=r"tensor 'control_layers\.1\.after_proj\.weight' holds 1 NaN"):
        load_controlnet(str(path))


def test_a_comfy_int8_file_is_refused_naming_the_unquantized_release(files):
    quantized = dict(files["2.1"], **{"control_layers.0.attention.to_q.comfy_quant": torch.zeros(8, dtype=torch.uint8),
                                      "control_layers.0.attention.to_q.weight_scale": torch.ones(())})
    with pytest.raises(ControlNetFormatError, match=r"quantized.*alibaba-pai"):
        load_controlnet(quantized)
