"""Tiny seeded SD3-family transformers and ControlNets, built with diffusers (the oracle).

Shapes follow diffusers' own SD3 ControlNet tests (tiny widths, several blocks), with SD3's real
patch size 2 and 16 latent channels. Every parameter is re-randomised: the ControlNet's output
projections and hint embedding start at zero.
"""
import re

import torch

import comfy_host
from diffusers import SD3ControlNetModel, SD3Transformer2DModel

from tiny_models import randomize_all

HEADS = 2
HEAD_DIM = 16
DIM = HEADS * HEAD_DIM
CONTEXT_DIM = 24
POOLED_DIM = 20
TABLE = 16  # position-table side, in patches
LATENT = (8, 12)  # latent height, width (4 x 6 patches)


def tiny_sd3_transformer(num_layers: int = 5, qk_norm=None, dual_attention_layers=(), seed: int = 0):
    torch.manual_seed(seed)
    model = SD3Transformer2DModel(
        sample_size=TABLE * 2, patch_size=2, in_channels=16, num_layers=num_layers, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=CONTEXT_DIM, caption_projection_dim=DIM,
        pooled_projection_dim=POOLED_DIM, out_channels=16, pos_embed_max_size=TABLE, qk_norm=qk_norm,
        dual_attention_layers=dual_attention_layers)
    return randomize_all(model, seed)


def tiny_instantx(num_layers: int = 2, extra_channels: int = 0, qk_norm=None, dual_attention_layers=(),
                  seed: int = 1) -> SD3ControlNetModel:
    """InstantX-layout SD3 ControlNet (own patch embedding and position table, joint blocks)."""
    torch.manual_seed(seed)
    model = SD3ControlNetModel(
        sample_size=TABLE * 2, patch_size=2, in_channels=16, num_layers=num_layers, attention_head_dim=HEAD_DIM,
        num_attention_heads=HEADS, joint_attention_dim=CONTEXT_DIM, caption_projection_dim=DIM,
        pooled_projection_dim=POOLED_DIM, out_channels=16, pos_embed_max_size=TABLE,
        extra_conditioning_channels=extra_channels, qk_norm=qk_norm, dual_attention_layers=dual_attention_layers)
    return randomize_all(model, seed)


def tiny_sd35(transformer: SD3Transformer2DModel, num_layers: int = 2, seed: int = 2) -> SD3ControlNetModel:
    """SD3.5-layout ControlNet as diffusers' conversion script configures it, with the base's embedder."""
    torch.manual_seed(seed)
    model = SD3ControlNetModel(
        patch_size=2, in_channels=16, num_layers=num_layers, attention_head_dim=HEAD_DIM, num_attention_heads=HEADS,
        joint_attention_dim=None, caption_projection_dim=DIM, pooled_projection_dim=POOLED_DIM, out_channels=16,
        pos_embed_max_size=None, pos_embed_type=None, use_pos_embed=False, force_zeros_for_pooled_projection=False)
    randomize_all(model, seed)
    # What StableDiffusion3ControlNetPipeline does for these models before sampling.
    model.pos_embed = model._get_pos_embed_from_transformer(transformer)
    return model.eval()


def sd35_reference_state_dict(controlnet: SD3ControlNetModel, control_type: int = 0) -> dict:
    """The diffusers model's weights under Stability's original names (inverse of diffusers' conversion script)."""
    sd = {k: v.clone() for k, v in controlnet.state_dict().items() if not k.startswith("pos_embed.")}
    out = {"control_type": torch.tensor([control_type], dtype=torch.int32)}
    names = {"norm1.linear": "adaLN_modulation.1", "attn.to_out.0": "attn.proj", "ff.net.0.proj": "mlp.fc1",
             "ff.net.2": "mlp.fc2"}
    for key, value in sd.items():
        m = re.match(r"(transformer_blocks\.\d+\.)(.+)\.(weight|bias)$", key)
        if m is None:
            out[key] = value
        elif m.group(2) == "attn.to_q":
            qkv = [sd[f"{m.group(1)}attn.to_{x}.{m.group(3)}"] for x in "qkv"]
            out[f"{m.group(1)}attn.qkv.{m.group(3)}"] = torch.cat(qkv)
        elif m.group(2) in names:
            out[f"{m.group(1)}{names[m.group(2)]}.{m.group(3)}"] = value
    return out


def sd3_inputs(batch: int = 2, seed: int = 3):
    """Latent, timesteps (0..1000), context, pooled vector, hint latent."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 16, *LATENT, generator=gen)
    t = torch.tensor([999.0, 321.5][:batch])
    context = torch.randn(batch, 7, CONTEXT_DIM, generator=gen)
    pooled = torch.randn(batch, POOLED_DIM, generator=gen)
    hint = torch.randn(batch, 16, *LATENT, generator=gen)
    return x, t, context, pooled, hint


def tiny_sd3_vae(seed: int = 0):
    """TAESD with 16 latent channels in ComfyUI's VAE wrapper, seeded."""
    comfy_host.boot()
    import comfy.sd
    import comfy.taesd.taesd
    gen = torch.Generator().manual_seed(seed)
    state = comfy.taesd.taesd.TAESD(latent_channels=16).state_dict()
    state = {k: v if v.ndim == 0 else torch.randn(v.shape, generator=gen) * 0.05 for k, v in state.items()}
    return comfy.sd.VAE(sd=state)
