"""Qwen-Image Fun ControlNet weights: detected from their keys, sizes read from the shapes, and damaged or foreign
files refused with clear errors."""
import pytest
import torch

from cnr_pack.controlnet_core import ControlNetFormatError, WeightFileError, load_controlnet
from cnr_pack.controlnet_core.families.qwen_image.format import claims_qwen_fun, claims_qwen_instantx
from cnr_pack.controlnet_core.families.qwen_image.fun import QwenFunControlNet
from cnr_pack.controlnet_core.loading.registry import detect_format
from damaged_files import write_truncated, write_with_nan
from tiny_qwen import AXES_DIM, LATENT_CHANNELS
from tiny_qwen_fun import DIM, fun_weights, tiny_fun_controlnet

FUN_ROW = "Qwen-Image Fun ControlNet Union (alibaba-pai)"


@pytest.fixture(scope="module")
def weights():
    return fun_weights(tiny_fun_controlnet(depth=3))


def test_sizes_are_read_from_the_weights(weights):
    net = load_controlnet(weights)
    cfg = net.config
    assert isinstance(net, QwenFunControlNet)
    assert (cfg.hidden_size, cfg.num_heads, cfg.depth, cfg.in_channels, cfg.mlp_hidden, cfg.hint_channels) == \
        (DIM, 3, 3, LATENT_CHANNELS, 4 * DIM, 2 * LATENT_CHANNELS + 1)
    assert cfg.family == "qwen_image" and net.family == "qwen_image" and cfg.strength_curve == "linear"


def test_the_released_width_reads_as_sixteen_latent_channels():
    weights = fun_weights(tiny_fun_controlnet(latent_channels=16))
    assert weights["control_img_in.weight"].shape[1] == 132
    assert load_controlnet(weights).config.in_channels == 16


def test_the_rotary_split_is_an_option_and_defaults_to_qwen_proportions(weights):
    assert load_controlnet(weights).config.axes_dim == (4, 6, 6)
    assert load_controlnet(weights, axes_dim=AXES_DIM).config.axes_dim == AXES_DIM


def test_the_file_is_claimed_by_the_fun_row_only_from_keys(weights):
    assert claims_qwen_fun(weights) and not claims_qwen_instantx(weights)
    assert detect_format(weights).name == FUN_ROW
    assert not claims_qwen_fun({k: v for k, v in weights.items() if "after_proj" not in k})


def test_a_hint_projection_of_an_even_channel_count_is_refused(weights):
    bad = dict(weights, **{"control_img_in.weight": torch.zeros(DIM, 32)})
    with pytest.raises(ControlNetFormatError, match=r"control_img_in takes 32 features: .* \(2 C \+ 1 channels"):
        load_controlnet(bad)


def test_a_tensor_of_the_wrong_shape_is_refused_naming_it(weights):
    bad = dict(weights, **{"control_blocks.1.attn.to_k.weight": torch.zeros(DIM, 40)})
    with pytest.raises(ControlNetFormatError, match=r"control_blocks\.1\.attn\.to_k\.weight is \[48, 40\] "
                                                    r"where \[48, 48\] belongs"):
        load_controlnet(bad)


def test_a_block_without_its_skip_projection_is_refused(weights):
    bad = {k: v for k, v in weights.items() if not k.startswith("control_blocks.1.after_proj.")}
    with pytest.raises(ControlNetFormatError, match=r"2 missing \(e\.g\. \['control_blocks\.1\.after_proj\.weight'"):
        load_controlnet(bad)


def test_missing_blocks_in_the_numbering_are_refused(weights):
    bad = {k: v for k, v in weights.items() if not k.startswith("control_blocks.1.")}
    with pytest.raises(ControlNetFormatError, match=r"control blocks \[0, 2\]: expected 0\.\.n-1"):
        load_controlnet(bad)


def test_a_qwen_image_2_1_fun_model_patch_is_refused_naming_comfyuis_loader(weights):
    bad = dict(weights, **{"control_blocks.0.img_mlp.out.weight": torch.zeros(DIM, 4 * DIM)})
    with pytest.raises(ControlNetFormatError, match="Qwen-Image-2.1 Fun ControlNet .* ModelPatchLoader"):
        load_controlnet(bad)


def test_a_truncated_file_is_refused_before_building(weights, tmp_path):
    path = write_truncated(weights, tmp_path / "qwen_fun.safetensors")
    with pytest.raises(WeightFileError, match="truncated"):
        load_controlnet(str(path))


def test_a_file_holding_nan_is_refused_naming_the_tensor(weights, tmp_path):
    path = write_with_nan(weights, "control_blocks.2.after_proj.weight", tmp_path / "qwen_fun_nan.safetensors")
    with pytest.raises(WeightFileError, match=r"tensor 'control_blocks\.2\.after_proj\.weight' holds 1 NaN"):
        load_controlnet(str(path))
