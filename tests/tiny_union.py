"""A tiny seeded SDXL-like ControlNet Union built with diffusers (the oracle), and its inputs."""
import torch
from diffusers import ControlNetUnionModel

from tiny_models import TEXT_EMBED_DIM, TINY_SDXL_KWARGS, randomize_all, sample_inputs

FUSION_PREFIXES = ("task_embedding", "transformer_layes.", "spatial_ch_projs.", "control_add_embedding.")


def tiny_union_diffusers(num_types: int = 8, seed: int = 0) -> ControlNetUnionModel:
    """SDXL-like Union: 3 levels, attention from the second, y vector, every weight random."""
    torch.manual_seed(seed)
    model = ControlNetUnionModel(
        **TINY_SDXL_KWARGS, conditioning_embedding_out_channels=(16, 32, 48, 64),
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
