"""Recognised but unsupported weights are refused with a message saying what they are and what to use."""
import importlib.util

import diffusers
import pytest
import torch

from cnr_pack.controlnet_core import diffusers_to_original, load_controlnet
from cnr_pack.controlnet_core.errors import ControlNetFormatError
from cnr_pack.controlnet_core.loading import detect_format
from cnr_pack.controlnet_core.refusals import NOT_A_CONTROL_MODEL, REFUSALS, refusal_for
from comfy_host import comfyui_root
from test_t2i_adapter import KINDS, tiny_adapter, to_original
from tiny_flux import tiny_flux_controlnet, tiny_xlabs_style_controlnet
from tiny_models import tiny_sd15_diffusers, tiny_sdxl_diffusers
from tiny_sd3 import sd35_reference_state_dict, tiny_instantx, tiny_sd3_transformer, tiny_sd35


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
    "qwen-image": (lambda: zeros("controlnet_blocks.0.weight", "transformer_blocks.0.img_mlp.net.0.proj.weight"),
                   "qwen_image_controlnet", r"a Qwen-Image InstantX ControlNet.*not yet supported"),
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


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.comfy) if c == "t2i-style" else c for c in CASES])
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
    yield "flux-instantx", tiny_flux_controlnet().state_dict()
    yield "flux-xlabs-diffusers-layout", tiny_xlabs_style_controlnet().state_dict()
    yield "sd3-instantx", tiny_instantx().state_dict()
    yield "sd35", sd35_reference_state_dict(tiny_sd35(tiny_sd3_transformer()))
    low_rank = ("input_blocks.1.0.in_layers.2.up", "input_blocks.1.0.in_layers.2.down")
    yield "control-lora", zeros("lora_controlnet", *low_rank, "input_hint_block.0.weight", "zero_convs.0.0.weight")


def test_no_refusal_claims_a_supported_model():
    claimed = {name: [r.name for r in REFUSALS if r.claims(sd)] for name, sd in supported_weights()}
    assert claimed == {name: [] for name in claimed}


def test_refusal_names_are_unique():
    names = [r.name for r in REFUSALS]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("keys,family", [
    (("img_in.weight", "pos_embed_input.weight", "double_blocks.0.img_attn.norm.key_norm.scale",
      "controlnet_blocks.0.weight"), "Flux ControlNet (XLabs)"),
    (("img_in.weight", "double_blocks.0.img_attn.qkv.weight", "controlnet_blocks.0.linear.weight"),
     "Flux ControlNet (Mistoline)"),
], ids=["xlabs", "mistoline"])
def test_dit_controlnets_named_like_their_base_model_reach_their_family_before_the_catch_all(keys, family):
    state_dict = zeros(*keys)
    assert NOT_A_CONTROL_MODEL.claims(state_dict), "the catch-all would claim these keys if it came first"
    assert detect_format(state_dict).name == family
