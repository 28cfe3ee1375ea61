"""Tiny seeded UNets and Control-LoRA files made from them, with diffusers ControlNets as oracles."""
import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from cnr_pack.controlnet_core import diffusers_to_original
from tiny_models import CONTEXT_DIM, SD15_HEADS, SDXL_HEADS, TEXT_EMBED_DIM, TIME_EMBED_DIM, randomize_all

RANK = 4
MARKER = "lora_controlnet"
_CONTROL_ONLY = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")


def tiny_sd15_unet(seed: int = 0, context_dim: int = CONTEXT_DIM, levels: int = 4) -> UNet2DConditionModel:
    """SD1.5-shaped: attention on every level but the deepest, 1x1-conv projections."""
    torch.manual_seed(seed)
    down = ("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1)
    unet = UNet2DConditionModel(
        block_out_channels=(32,) + (64,) * (levels - 1), layers_per_block=2, cross_attention_dim=context_dim,
        attention_head_dim=SD15_HEADS, norm_num_groups=32, down_block_types=down, up_block_types=up,
    )
    return randomize_all(unet, seed)


def tiny_sdxl_unet(seed: int = 0) -> UNet2DConditionModel:
    """SDXL-shaped: 3 levels, no attention on the first, linear projections, y vector."""
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=SDXL_HEADS, norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(0, 1, 2), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TEXT_EMBED_DIM + 6 * TIME_EMBED_DIM,
    )
    return randomize_all(unet, seed)


def control_lora_for(unet: UNet2DConditionModel, seed: int = 1, rank: int = RANK):
    """A Control-LoRA file for ``unet`` (original layout, with the marker) and the ControlNet it means.

    Weights the ControlNet shares with the UNet become random up/down pairs, biases and norms random
    full tensors, and the ControlNet-only layers (hint embedding, zero convolutions) random too.

    Returns:
        (file state dict, diffusers ControlNetModel holding W_unet + up @ down).
    """
    oracle = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(16, 32, 48, 64))
    gen = torch.Generator().manual_seed(seed)
    stored, merged = {}, {}
    for key, w in oracle.state_dict().items():
        if key.startswith(_CONTROL_ONLY):
            merged[key] = stored[key] = torch.randn(w.shape, generator=gen) * 0.05
        elif w.ndim >= 2:
            up = torch.randn((w.shape[0], rank) + (1,) * (w.ndim - 2), generator=gen) * 0.1
            down = torch.randn((rank,) + tuple(w.shape[1:]), generator=gen) * 0.1
            stored[key[: -len("weight")] + "up"] = up
            stored[key[: -len("weight")] + "down"] = down
            merged[key] = w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape)
        else:
            merged[key] = stored[key] = w + torch.randn(w.shape, generator=gen) * 0.05
    oracle.load_state_dict(merged)
    file = diffusers_to_original(stored)
    file[MARKER] = torch.tensor([])
    return file, oracle.eval()


def original_layout_unet(unet: UNet2DConditionModel, prefix: str = "") -> dict:
    """The UNet's encoder under original names, plus decoder keys a full UNet has (to be ignored)."""
    encoder = {k: v for k, v in ControlNetModel.from_unet(unet).state_dict().items()
               if not k.startswith(_CONTROL_ONLY)}
    sd = diffusers_to_original(encoder)
    sd["output_blocks.0.0.in_layers.0.weight"] = torch.ones(64)
    sd["out.2.weight"] = torch.ones(4, 32, 3, 3)
    return {prefix + k: v for k, v in sd.items()}
