"""Qwen-Image InstantX weights: sizes read from the shapes, and damaged or foreign files refused with clear errors."""
import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import ControlNetFormatError, WeightFileError, load_controlnet
from cnr_pack.controlnet_core.families.qwen_image.format import claims_qwen_instantx
from cnr_pack.controlnet_core.loading.registry import detect_format
from damaged_files import write_truncated, write_with_nan
from tiny_qwen import AXES_DIM, INPAINT_EXTRA, LATENT_CHANNELS, TEXT_DIM, tiny_qwen_controlnet


@pytest.fixture(scope="module")
def weights():
    return {k: v.contiguous() for k, v in tiny_qwen_controlnet(num_layers=3).state_dict().items()}


def test_sizes_are_read_from_the_weights(weights):
    cfg = load_controlnet(weights).config
    assert (cfg.hidden_size, cfg.num_heads, cfg.depth, cfg.in_channels, cfg.context_dim, cfg.mlp_hidden,
            cfg.hint_channels) == (48, 3, 3, LATENT_CHANNELS, TEXT_DIM, 192, LATENT_CHANNELS)
    assert cfg.family == "qwen_image" and not cfg.is_inpainting


def test_the_inpainting_file_is_read_as_latent_plus_mask():
    cfg = load_controlnet(tiny_qwen_controlnet(extra_condition_channels=INPAINT_EXTRA).state_dict()).config
    assert cfg.is_inpainting and cfg.hint_channels == LATENT_CHANNELS + 1


def test_the_rotary_split_is_an_option_and_defaults_to_qwen_proportions(weights):
    assert load_controlnet(weights).config.axes_dim == (4, 6, 6)
    assert load_controlnet(weights, axes_dim=AXES_DIM).config.axes_dim == AXES_DIM


def test_the_file_is_claimed_by_the_qwen_image_row_only_from_keys(weights):
    assert claims_qwen_instantx(weights)
    assert detect_format(weights).name == "Qwen-Image ControlNet (InstantX Union, Inpainting)"
    assert not claims_qwen_instantx({k: v for k, v in weights.items() if not k.startswith("controlnet_blocks.")})


def test_a_hint_projection_of_another_width_is_refused(weights):
    bad = dict(weights, **{"controlnet_x_embedder.weight": torch.zeros(48, 24)})
    with pytest.raises(ControlNetFormatError, match=r"controlnet_x_embedder takes 24 channels and img_in 16: .*"
                                                    r"\(16, Union\) or the latent and its mask \(20, Inpainting\)"):
        load_controlnet(bad)


def test_a_block_without_its_residual_projection_is_refused(weights):
    bad = {k: v for k, v in weights.items() if not k.startswith("controlnet_blocks.2.")}
    with pytest.raises(ControlNetFormatError, match=r"3 transformer blocks but controlnet_blocks \[0, 1\]"):
        load_controlnet(bad)


def test_a_tensor_of_the_wrong_shape_is_refused_naming_it(weights):
    bad = dict(weights, **{"transformer_blocks.1.attn.to_k.weight": torch.zeros(48, 40)})
    with pytest.raises(ControlNetFormatError, match=r"transformer_blocks\.1\.attn\.to_k\.weight is \[48, 40\] "
                                                    r"where \[48, 48\] belongs"):
        load_controlnet(bad)


def test_a_truncated_file_is_refused_before_building(weights, tmp_path):
    path = write_truncated(weights, tmp_path / "qwen_union.safetensors")
    with pytest.raises(WeightFileError, match="truncated"):
        load_controlnet(str(path))


def test_a_file_holding_nan_is_refused_naming_the_tensor(weights, tmp_path):
    path = write_with_nan(weights, "controlnet_blocks.1.weight", tmp_path / "qwen_union_nan.safetensors")
    with pytest.raises(WeightFileError, match=r"tensor 'controlnet_blocks\.1\.weight' holds 1 NaN"):
        load_controlnet(str(path))


def test_a_saved_file_loads_to_the_residuals_of_its_state_dict(weights, tmp_path):
    path = tmp_path / "qwen_union.safetensors"
    save_file(weights, str(path))
    from_file, from_dict = load_controlnet(str(path), axes_dim=AXES_DIM), load_controlnet(weights, axes_dim=AXES_DIM)
    x, context = torch.randn(1, LATENT_CHANNELS, 4, 4), torch.randn(1, 3, TEXT_DIM)
    hint, t = torch.randn(1, LATENT_CHANNELS, 4, 4), torch.tensor([0.5])
    pairs = zip(from_file(x, t, context, hint).tensors, from_dict(x, t, context, hint).tensors)
    # Equal weights; the file's tensors sit in other buffers, where BLAS may round the last bit differently.
    assert max((a - b).abs().max().item() for a, b in pairs) <= 1e-6
