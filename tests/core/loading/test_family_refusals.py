"""Every refusal of the Union and Control-LoRA families, with the message a user sees."""
import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import ControlNetFormatError, ControlNetInputError, load_controlnet
from cnr_pack.controlnet_core.families.control_lora import format as control_lora
from cnr_pack.controlnet_core.families.union import format as union
from tiny_control_lora import MARKER, control_lora_for, tiny_sd15_unet, tiny_sdxl_unet
from tiny_models import sdxl_y
from tiny_union import tiny_union_diffusers, union_inputs


@pytest.fixture(scope="module")
def six_type_union():
    return union.build(tiny_union_diffusers(num_types=6).state_dict())


@pytest.fixture(scope="module")
def union_call():
    x, t, context, hints, text, time_ids = union_inputs()
    return x, t, context, hints, sdxl_y(text, time_ids)


@pytest.mark.parametrize("control_type", [6, [0, 7]], ids=["tile", "openpose+repaint"])
def test_union_promax_type_on_a_six_type_file_is_refused(six_type_union, union_call, control_type):
    x, t, context, hints, y = union_call
    hint = hints[0] if isinstance(control_type, int) else list(hints)
    with pytest.raises(ControlNetInputError, match=r"not in this 6-type ControlNet Union \(tile and repaint need the "
                                                   r"ProMax file\); it has 0 openpose, 1 depth, .*5 segment$"):
        six_type_union(x, t, context, hint, y=y, control_type=control_type)


def test_union_without_a_control_type_is_refused(six_type_union, union_call):
    x, t, context, hints, y = union_call
    with pytest.raises(ControlNetInputError, match="a ControlNet Union needs control_type: one or more of 0 openpose"):
        six_type_union(x, t, context, hints[0], y=y)


def test_union_with_an_empty_control_type_is_refused(six_type_union, union_call):
    x, t, context, hints, y = union_call
    with pytest.raises(ControlNetInputError, match="control_type is empty"):
        six_type_union(x, t, context, hints[0], y=y, control_type=[])


def test_union_control_type_given_by_name_is_refused(six_type_union, union_call):
    x, t, context, hints, y = union_call
    with pytest.raises(ControlNetInputError, match="control_type entries must be integers, got 'depth'"):
        six_type_union(x, t, context, hints[0], y=y, control_type=["depth"])


def test_union_with_fewer_hints_than_types_is_refused(six_type_union, union_call):
    x, t, context, hints, y = union_call
    with pytest.raises(ControlNetInputError, match=r"2 control type\(s\) need 2 hint image\(s\), one per type .*got 1"):
        six_type_union(x, t, context, hints[0], y=y, control_type=[1, 3])


def test_union_hint_of_the_wrong_size_is_refused(six_type_union, union_call):
    x, t, context, hints, y = union_call
    small = hints[1][..., :32, :32]
    with pytest.raises(ControlNetInputError, match="hint must be 8x the latent size"):
        six_type_union(x, t, context, [hints[0], small], y=y, control_type=[1, 3])


def test_union_without_its_fusion_block_is_refused():
    sd = {k: v for k, v in tiny_union_diffusers().state_dict().items() if not k.startswith("transformer_layes.")}
    assert union.claims(sd)
    with pytest.raises(ControlNetFormatError, match=r"ControlNet Union weights are incomplete: the hint fusion lacks "
                                                    r"\['transformer_layes.0.attn.in_proj_weight'\]"):
        union.build(sd)


def test_union_with_more_than_eight_types_is_refused():
    sd = dict(tiny_union_diffusers().state_dict())
    sd["task_embedding"] = torch.zeros(9, 32)
    with pytest.raises(ControlNetFormatError, match="task_embedding has 9 rows: .* more control types than the 8"):
        union.build(sd)


@pytest.fixture(scope="module")
def sdxl_lora():
    return control_lora_for(tiny_sdxl_unet())[0]


@pytest.fixture(scope="module")
def sd15_lora():
    return control_lora_for(tiny_sd15_unet())[0]


def test_sdxl_control_lora_on_an_sd15_model_is_refused(sdxl_lora):
    with pytest.raises(ControlNetFormatError, match=r"this Control-LoRA was made for sdxl \(context width 32, y width "
                                                    r"64\) but the base model is custom \(context width 32\); use a "
                                                    r"Control-LoRA made for custom or a sdxl model"):
        control_lora.build(sdxl_lora, base_unet=tiny_sd15_unet().state_dict())


def test_control_lora_on_a_model_of_another_context_width_is_refused(sd15_lora):
    with pytest.raises(ControlNetFormatError, match=r"made for custom \(context width 32\) but the base model is "
                                                    r"custom \(context width 48\)"):
        control_lora.build(sd15_lora, base_unet=tiny_sd15_unet(context_dim=48).state_dict())


def test_control_lora_on_a_shallower_unet_of_the_same_widths_is_refused(sd15_lora):
    with pytest.raises(ControlNetFormatError, match=r"the base UNet has no input_blocks\.\d+\..*weight, which this "
                                                    r"custom \(context width 32\) Control-LoRA adds to"):
        control_lora.build(sd15_lora, base_unet=tiny_sd15_unet(levels=3).state_dict())


def test_control_lora_on_base_weights_of_other_shapes_is_refused(sd15_lora):
    base = dict(tiny_sd15_unet().state_dict())
    base["conv_in.weight"] = torch.zeros(32, 4, 1, 1)
    with pytest.raises(ControlNetFormatError, match=r"input_blocks\.0\.0\.weight: the base UNet's \(32, 4, 1, 1\) "
                                                    r"does not fit the Control-LoRA's up \(32, 4, 1, 1\) @ "
                                                    r"down \(4, 4, 3, 3\)"):
        control_lora.build(sd15_lora, base_unet=base)


def test_control_lora_with_base_weights_in_no_known_layout_is_refused(sd15_lora):
    with pytest.raises(ControlNetFormatError, match="the base UNet weights are in no known layout"):
        control_lora.build(sd15_lora, base_unet={"encoder.conv.weight": torch.zeros(1)})


def test_control_lora_with_an_unpaired_up_is_refused(sd15_lora):
    sd = {k: v for k, v in sd15_lora.items() if k != "input_blocks.0.0.down"}
    with pytest.raises(ControlNetFormatError, match=r"1 up/down tensors without their partner, e\.g\. "
                                                    r"\['input_blocks\.0\.0'\]"):
        control_lora.build(sd)


def test_control_lora_pair_of_different_ranks_is_refused(sd15_lora):
    sd = dict(sd15_lora)
    sd["input_blocks.0.0.down"] = torch.zeros(3, 4, 3, 3)
    with pytest.raises(ControlNetFormatError, match=r"input_blocks\.0\.0: up \(32, 4, 1, 1\) and down \(3, 4, 3, 3\) "
                                                    r"differ in rank"):
        control_lora.build(sd)


def test_control_lora_without_a_hint_embedding_is_refused(sd15_lora):
    sd = {k: v for k, v in sd15_lora.items() if not k.startswith("input_hint_block.")}
    with pytest.raises(ControlNetFormatError, match=r"Control-LoRA without a hint embedding"):
        control_lora.build(sd)


def test_control_lora_without_cross_attention_is_refused(sd15_lora):
    sd = {k: v for k, v in sd15_lora.items() if ".attn2." not in k}
    with pytest.raises(ControlNetFormatError, match="Control-LoRA without cross-attention weights"):
        control_lora.build(sd)


def test_marker_alone_is_claimed_so_the_refusal_names_control_lora():
    assert control_lora.claims({MARKER: torch.tensor([])})
    with pytest.raises(ControlNetFormatError, match="Control-LoRA without a hint embedding"):
        control_lora.build({MARKER: torch.tensor([])})


def test_load_controlnet_names_the_file_when_the_base_model_does_not_fit(sdxl_lora, tmp_path):
    path = tmp_path / "control-lora-sdxl.safetensors"
    save_file(sdxl_lora, str(path))
    with pytest.raises(ControlNetFormatError, match=r"control-lora-sdxl\.safetensors: this Control-LoRA was made "
                                                    r"for sdxl"):
        load_controlnet(path, base_unet=tiny_sd15_unet().state_dict())
