"""Recognised but unsupported weights are refused with a message saying what they are and what to use."""
import importlib.util

import diffusers
import pytest
import torch

from cnr_pack.controlnet_core import diffusers_to_original, load_controlnet
from cnr_pack.controlnet_core.errors import ControlNetFormatError
from cnr_pack.controlnet_core.loading.registry import detect_format
from cnr_pack.controlnet_core.loading.refusals import REFUSALS, refusal_for
from comfy_host import comfyui_root
from tiny_t2i import KINDS, tiny_adapter, to_original
from tiny_models import tiny_sd15_diffusers, tiny_sdxl_diffusers


def zeros(*keys: str) -> dict:
    return {k: torch.zeros(2, 2) for k in keys}


def tiny_diffusers_unet() -> diffusers.UNet2DConditionModel:
    return diffusers.UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, cross_attention_dim=8, attention_head_dim=2,
        norm_num_groups=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))


def controlnet_xs(fused: bool) -> dict:
    unet = tiny_diffusers_unet()
    adapter = diffusers.ControlNetXSAdapter.from_unet(unet, size_ratio=0.125, num_attention_heads=1)
    model = diffusers.UNetControlNetXSModel.from_unet(unet, adapter) if fused else adapter
    return model.state_dict()


def flux_instantx(num_mode=None) -> dict:
    return diffusers.FluxControlNetModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=2, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        num_mode=num_mode).state_dict()


def qwen_instantx(extra_condition_channels=0) -> dict:
    return diffusers.QwenImageControlNetModel(
        patch_size=2, in_channels=16, out_channels=4, num_layers=1, attention_head_dim=16, num_attention_heads=3,
        joint_attention_dim=16, axes_dims_rope=(8, 4, 4),
        extra_condition_channels=extra_condition_channels).state_dict()


def sd3_controlnet() -> dict:
    return diffusers.SD3ControlNetModel(
        sample_size=4, patch_size=1, in_channels=4, num_layers=2, attention_head_dim=4, num_attention_heads=2,
        joint_attention_dim=8, caption_projection_dim=8, pooled_projection_dim=8, out_channels=4).state_dict()


def comfy_style_adapter() -> dict:
    path = comfyui_root() / "comfy" / "t2i_adapter" / "adapter.py"
    spec = importlib.util.spec_from_file_location("comfy_t2i_adapter_style", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.StyleAdapter(width=16, context_dim=8, num_head=2, n_layes=1, num_token=2).state_dict()


LLLITE = "lllite_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"

CASES = {  # id: (weights, refusal name, message pattern)
    "lllite": (lambda: zeros(*(f"{LLLITE}.{p}.weight" for p in ("conditioning1.0", "down.0", "mid.0", "up.0")),
                             "lllite_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.down.0.weight"),
               "controlnet_lllite", rf"ControlNet-LLLite.*2 modules such as '{LLLITE}'.*ControlNet-LLLite-ComfyUI"),
    "controlnet-xs": (lambda: controlnet_xs(fused=False), "controlnet_xs",
                      r"a ControlNet-XS \(base_to_ctrl.*ControlNetXSPipeline"),
    "controlnet-xs-fused": (lambda: controlnet_xs(fused=True), "controlnet_xs",
                            r"a UNet fused with a ControlNet-XS.*neither this pack nor ComfyUI"),
    "hunyuan-dit": (lambda: zeros(*(f"after_proj_list.{i}.bias" for i in range(19))), "hunyuan_dit_controlnet",
                    r"a HunyuanDiT ControlNet \(19 after_proj_list\).*not yet supported"),
    "stable-cascade": (lambda: zeros("backbone.0.0.weight", "backbone.1.weight"), "stable_cascade_controlnet",
                       r"a Stable Cascade ControlNet.*not yet supported"),
    "t2i-style": (comfy_style_adapter, "t2i_style_adapter", r"a T2I style adapter.*Load Style Model"),
    "lora-kohya": (lambda: zeros("lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                                 "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"),
                   "lora", r"a LoRA .*'lora_unet_down.*lora_controlnet.*Load LoRA"),
    "lora-peft": (lambda: zeros("unet.down_blocks.0.attentions.0.proj_in.lora_A.weight",
                                "unet.down_blocks.0.attentions.0.proj_in.lora_B.weight"), "lora", "a LoRA .*Load LoRA"),
    "checkpoint": (lambda: zeros("model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in"),
                   "not_a_control_model", r"a full checkpoint .*model\.diffusion_model.*Load Checkpoint"),
    "unet-diffusers": (lambda: tiny_diffusers_unet().state_dict(), "not_a_control_model",
                       r"a UNet with decoder blocks, with keys such as 'up_blocks.*Load Diffusion Model"),
    "unet-original": (lambda: zeros("input_blocks.0.0.weight", "output_blocks.0.0.in_layers.0.weight"),
                      "not_a_control_model", r"a UNet .*'output_blocks"),
    "flux-model": (lambda: zeros("double_blocks.0.img_attn.qkv.weight", "final_layer.linear.weight"),
                   "not_a_control_model", r"a diffusion transformer"),
    "vae": (lambda: zeros("decoder.up.0.block.0.conv1.weight", "encoder.down.0.block.0.conv1.weight"),
            "not_a_control_model", r"a VAE, with keys .*Load VAE"),
    "clip": (lambda: zeros("text_model.encoder.layers.0.mlp.fc1.weight"), "not_a_control_model",
             r"a text encoder, with keys .*Load CLIP"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recognised_weights_are_refused_with_what_they_are_and_what_to_use(case):
    make, name, message = CASES[case]
    state_dict = make()
    refusal = refusal_for(state_dict)
    assert refusal is not None and refusal.name == name
    with pytest.raises(ControlNetFormatError, match=f"^state dict: {message}"):
        load_controlnet(state_dict, dtype=torch.float16)


def supported_weights():
    cn = tiny_sd15_diffusers().state_dict()
    yield "controlnet-diffusers", cn
    yield "controlnet-original", diffusers_to_original(cn)
    yield "sdxl-controlnet", tiny_sdxl_diffusers().state_dict()
    for kind in KINDS:
        sd = tiny_adapter(kind).state_dict()
        yield kind, sd
        yield kind + "-original", to_original(sd, kind)
    low_rank = ("input_blocks.1.0.in_layers.2.up", "input_blocks.1.0.in_layers.2.down")
    yield "control-lora", zeros("lora_controlnet", *low_rank, "input_hint_block.0.weight", "zero_convs.0.0.weight")
    yield "flux-instantx", flux_instantx()
    yield "flux-instantx-union", flux_instantx(num_mode=7)
    yield "sd3-instantx", sd3_controlnet()
    yield "qwen-image-instantx-union", qwen_instantx()
    yield "qwen-image-instantx-inpainting", qwen_instantx(extra_condition_channels=4)


def test_flux_sd3_and_qwen_image_controlnets_are_claimed_by_their_own_families():
    assert detect_format(flux_instantx()).name.startswith("Flux ControlNet")
    assert detect_format(sd3_controlnet()).name.startswith("SD3 ControlNet")
    assert detect_format(qwen_instantx()).name.startswith("Qwen-Image ControlNet")
    assert detect_format(qwen_instantx(extra_condition_channels=4)).name.startswith("Qwen-Image ControlNet")


def test_no_refusal_claims_a_supported_model():
    claimed = {name: [r.name for r in REFUSALS if r.claims(sd)] for name, sd in supported_weights()}
    assert claimed == {name: [] for name in claimed}


def test_refusal_names_are_unique():
    names = [r.name for r in REFUSALS]
    assert len(set(names)) == len(names)
