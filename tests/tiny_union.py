"""A tiny seeded SDXL-like ControlNet Union built with diffusers (the oracle), and its inputs."""
import torch
from diffusers import ControlNetUnionModel

from tiny_models import CONTEXT_DIM, SDXL_HEADS, TEXT_EMBED_DIM, TIME_EMBED_DIM, randomize_all, sample_inputs

FUSION_PREFIXES = ("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")


def tiny_union_diffusers(num_types: int = 8, seed: int = 0) -> ControlNetUnionModel:
    """SDXL-like Union: 3 levels, attention from the second, y vector, every weight random."""
    torch.manual_seed(seed)
    model = ControlNetUnionModel(
        block_out_channels=(32, 64, 64), layers_per_block=2, cross_attention_dim=CONTEXT_DIM,
        attention_head_dim=SDXL_HEADS, norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        transformer_layers_per_block=(0, 1, 2), use_linear_projection=True,
        addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED_DIM,
        projection_class_embeddings_input_dim=TEXT_EMBED_DIM + 6 * TIME_EMBED_DIM,
        conditioning_embedding_out_channels=(16, 32, 48, 64),
        num_control_type=num_types, num_trans_channel=32, num_trans_head=4, num_proj_channel=32,
    )
    return randomize_all(model, seed)


def union_inputs(batch: int = 2):
    """(x, timesteps, context, (hint, second hint), text_embeds, time_ids)."""
    x, t, context, hint = sample_inputs(batch)
    gen = torch.Generator().manual_seed(5)
    text = torch.randn(batch, TEXT_EMBED_DIM, generator=gen)
    time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [96.0, 64.0, 8.0, 0.0, 64.0, 64.0]])[:batch]
    second_hint = torch.rand(hint.shape, generator=gen)
    return x, t, context, (hint, second_hint), text, time_ids
