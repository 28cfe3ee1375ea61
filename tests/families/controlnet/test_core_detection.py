"""Full-size SD1.5, SD2.1 and SDXL ControlNets are recognised from keys and shapes alone."""
import pytest
import torch

from cnr_pack.controlnet_core import ControlNet, ControlNetConfig, detect_config, original_to_diffusers
from cnr_pack.controlnet_core.families.controlnet.convert import diffusers_to_original

CONFIGS = {
    "sd1": ControlNetConfig(family="sd1"),
    "sd2": ControlNetConfig(context_dim=1024, num_heads=-1, num_head_channels=64, use_linear_in_transformer=True,
                            family="sd2"),
    "sdxl": ControlNetConfig(channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2), transformer_depth=(0, 0, 2, 2, 10, 10),
                             transformer_depth_middle=10, context_dim=2048, num_heads=-1, num_head_channels=64,
                             use_linear_in_transformer=True, adm_in_channels=2816, family="sdxl"),
}


@pytest.mark.parametrize("family", list(CONFIGS))
def test_full_size_architecture_is_detected_in_both_layouts(family):
    with torch.device("meta"):
        state = ControlNet(CONFIGS[family]).state_dict()
    assert detect_config(state) == CONFIGS[family]
    assert detect_config(diffusers_to_original(original_to_diffusers(state))) == CONFIGS[family]


def test_sdxl_has_nine_down_residuals_and_sd15_twelve():
    assert CONFIGS["sdxl"].num_down_residuals == 9 and CONFIGS["sd1"].num_down_residuals == 12
