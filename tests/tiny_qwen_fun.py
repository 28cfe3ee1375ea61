"""Tiny Qwen-Image Fun ControlNets built from diffusers' Qwen-Image blocks, and the reference's equations.

There is no diffusers class for the Fun ControlNet; the oracle is diffusers' ``QwenImageTransformerBlock``
(the blocks the VideoX-Fun reference subclasses) with the Fun projections attached under the file's names,
composed as VideoX-Fun's ``QwenImageControlTransformer2DModel.forward_vace`` composes them, on a diffusers
``QwenImageTransformer2DModel`` base whose embedders it borrows.
"""
import torch
from diffusers.models.transformers.transformer_qwenimage import QwenImageTransformerBlock
from torch import nn

from tiny_qwen import TINY, img_shapes, pack, randomize_qwen

HEADS, HEAD_DIM = TINY["num_attention_heads"], TINY["attention_head_dim"]
DIM = HEADS * HEAD_DIM


def tiny_fun_controlnet(seed: int = 0, depth: int = 2, latent_channels: int = 4, dim: int = DIM,
                        heads: int = HEADS) -> nn.Module:
    """A module whose state dict has a Fun file's keys: ``control_img_in`` (``2 C + 1`` channels packed 2x2)
    and diffusers Qwen-Image blocks as ``control_blocks.*`` with ``after_proj`` (block 0 also ``before_proj``),
    every parameter re-randomised (the zero-initialised projections included)."""
    torch.manual_seed(seed)
    net = nn.Module()
    net.control_img_in = nn.Linear((2 * latent_channels + 1) * 4, dim)
    net.control_blocks = nn.ModuleList(QwenImageTransformerBlock(dim, heads, dim // heads) for _ in range(depth))
    net.control_blocks[0].before_proj = nn.Linear(dim, dim)
    for block in net.control_blocks:
        block.after_proj = nn.Linear(dim, dim)
    return randomize_qwen(net, seed + 1)


def fun_weights(net: nn.Module) -> dict:
    """The state dict as a file holds it (contiguous tensors)."""
    return {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}


def reference_skips(base, fun: nn.Module, x, t, context, hint):
    """The Fun ControlNet's skips by the reference's equations, on diffusers' modules only.

    ``c0 = before_proj(control_img_in(hint)) + img_in(x)``; each control block runs on ``(c, txt)`` with the base
    model's timestep embedding and rotary positions, the text stream carried from block to block; skip ``i`` is
    ``after_proj_i`` of block ``i``'s image output.

    Args:
        base: a diffusers ``QwenImageTransformer2DModel`` (its ``img_in``, ``txt_norm``, ``txt_in``,
            ``time_text_embed`` and ``pos_embed``).
        fun: :func:`tiny_fun_controlnet`.
        x: latent (B, C, h, w); t: times in 0..1 (B,); context: text tokens (B, T, C_t).
        hint: the unpacked 2 C + 1 channel hint (B, 2 C + 1, h, w).
    """
    with torch.no_grad():
        image = base.img_in(pack(x))
        text = base.txt_in(base.txt_norm(context))
        temb = base.time_text_embed(t, image)
        rope = base.pos_embed(img_shapes(x), max_txt_seq_len=context.shape[1], device=x.device)
        c = fun.control_blocks[0].before_proj(fun.control_img_in(pack(hint))) + image
        skips = []
        for block in fun.control_blocks:
            text, c = block(hidden_states=c, encoder_hidden_states=text, encoder_hidden_states_mask=None, temb=temb,
                            image_rotary_emb=rope)
            skips.append(block.after_proj(c))
    return skips
