"""Binder of the SD3 / SD3.5 ControlNets (InstantX SD3 Medium, AliMama inpainting, Stability's SD3.5 Large)."""
from __future__ import annotations

from dataclasses import replace

from ...controlnet_core.families.sd3.hint import hint_latent, sd35_hint_pixels
from ...controlnet_core.families.sd3.joints import expand_to_joint_blocks
from .. import compat
from ..control import LoadedControlNet, wrap_controlnet
from .binding import FamilyBinding, encode_with_vae
from .transformer import check_transformer_fits, hint_vae_of, inpaint_hint_encoder, inpaint_rule_of, uniform_rule

SD3_JOINT_BLOCK_RULES = {"instantx": "diffusers", "sd35": "comfyui"}
"""How SD3 residuals spread over joint blocks (:func:`.sd3.model.joint_block_indices`), by layout. InstantX:
diffusers' rule, which ComfyUI's equals for the released models (24 joint blocks, 6 or 12 ControlNet
blocks). SD3.5: the rule of Stability's reference, the models' own, which gives the last joint block a
residual too (ComfyUI's rule here; diffusers gives it none)."""


def bind_sd3(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """An SD3 ControlNet on an SD3 MODEL; an SD3.5 one takes the MODEL's patch embedding and position table."""
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    dm = model.model.diffusion_model
    cfg = control.net.config
    rule = inpaint_rule_of(control, node_id)
    if cfg.layout == "sd35":
        view = control.net.with_base_embedder({k: v for k, v in dm.state_dict().items()
                                               if k.startswith("x_embedder.") or k == "pos_embed"})
        control = replace(control, net=view, patcher=wrap_controlnet(view, control.name).patcher)
    blocks = len(dm.joint_blocks)
    return FamilyBinding(
        control=control,
        scales_rule=uniform_rule(cfg.num_layers),
        input_popped=False,
        takes_y=True,
        # SD3.5's type-specific preprocessing as its reference does it (canny: 127.5 a + 0.5 at the encoder).
        # Inpainting ControlNets: the reference shifts the latent, ComfyUI does not (its rule, "comfyui").
        encode_hint=inpaint_hint_encoder(
            lambda image: hint_latent(encode_with_vae(vae, sd35_hint_pixels(image, cfg.control_type)).float(), cfg,
                                      rule or "reference"), rule),
        patch=cfg.patch_size,
        expand=lambda res: expand_to_joint_blocks(res, blocks, cfg.layout, SD3_JOINT_BLOCK_RULES[cfg.layout]),
        attention=compat.attention_kernel(),
    )
