"""Binder of the Flux ControlNets (InstantX, Shakker-Labs Union, AliMama inpainting, XLabs, Mistoline)."""
from __future__ import annotations


from ...controlnet_core.families.flux.model import expand_to_base
from ...controlnet_core.families.flux.tokens import PATCH
from .. import compat
from ..control import LoadedControlNet
from .binding import FamilyBinding, encode_with_vae
from .transformer import (check_transformer_fits, hint_vae_of, inpaint_hint_encoder, inpaint_rule_of, uniform_rule,
                          with_rotary_split)


def bind_flux(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Flux ControlNet on a Flux MODEL, with the MODEL's rotary split (not stored in the weights)."""
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    dm = model.model.diffusion_model
    control = with_rotary_split(control, tuple(dm.params.axes_dim))
    cfg = control.net.config
    rule = inpaint_rule_of(control, node_id)
    num_double, num_single = len(dm.double_blocks), len(dm.single_blocks)
    latent_format = model.model.latent_format
    return FamilyBinding(
        control=control,
        scales_rule=uniform_rule(control.net.num_residuals),
        input_popped=False,
        takes_y=True,
        encode_hint=None if vae is None else inpaint_hint_encoder(
            lambda image: latent_format.process_in(encode_with_vae(vae, image)), rule),
        cond_keys=("guidance",) if cfg.guidance_embed else (),
        patch=PATCH,
        expand=lambda res: expand_to_base(res, num_double, num_single, repeat_mode=cfg.repeat_mode),
        attention=compat.attention_kernel(),
    )
