"""What the shared sampler wrapper needs to know about one control on one MODEL: a :class:`FamilyBinding`.

A binding is made once, when the Apply node runs, by the family's binder (``bindings/<family>.py``, found
through ``bindings/registry.py``); the wrapper in ``sampler_wrapper.py`` reads it and never asks which family
it serves.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

from torch import Tensor

import comfy.model_management

from ...controlnet_core.injection.weighting import ControlMode
from ...controlnet_core.layers.attention import AttentionFn
from ...controlnet_core.layers.tokens import token_grid
from ...controlnet_core.residuals import ControlResiduals
from ..base import NodeInputError
from ..control import LoadedControlNet
from ..validation import parse_block_weights

ScalesRule = Callable[[float, ControlMode, float, Optional[Sequence[float]]], Tuple[float, ...]]
"""``(strength, control mode, soft base, block weights or None) -> one scale per residual``; raises
ValueError for a mode the family has no curve for."""


@dataclass(frozen=True, eq=False)
class FamilyBinding:
    """One control bound to one MODEL, checked to fit it and prepared for it.

    Attributes:
        control: the control to run on this MODEL (a merged Control-LoRA, or a view of the loaded
            ControlNet with the MODEL's embedder or rotary split; the loaded one is never changed).
        scales_rule: the family's strength curve (see :data:`ScalesRule`).
        input_popped: the model pops ``control['input']`` from the end (ComfyUI's UNet) rather than
            indexing it in block order (Flux, MMDiT).
        takes_y: the forward reads the conditioning's pooled vector ``y``.
        encode_hint: control image :math:`(B, 3, H, W)` in 0..1 to the net's hint (a VAE latent);
            None = the image itself. For a latent inpainting ControlNet the image to inpaint arrives with
            the inpaint mask as a fourth channel, :math:`(B, 4, H, W)`.
        cond_keys: conditioning entries passed to the forward under their own names.
        patch: latent pixels per image token when residuals are tokens :math:`(B, N, D)`; None
            for :math:`(B, C, H, W)` maps.
        expand: spreads the control's own (already weighted) residuals over the base model's
            blocks; None = they already match.
        attention: the attention kernel the forward takes (ComfyUI's, as the base model beside it
            uses); None for forwards without one.
        complete: for a control completed only when sampling starts (a Control-LoRA, merged with the
            weights the sampled clone carries then), what makes it; ``control`` is then its outline (a
            module on the meta device with the right shapes). None = ``control`` runs as it is.
        install: for a control that runs inside the base model's forward (Z-Image, whose model takes no
            ``control`` input), what prepares the Apply node's clone of the MODEL for it (a diffusion-model
            wrapper in the clone's options); the sampler wrapper then hands the model call a
            :class:`StagedControl` instead of residuals. None = residuals through ``c["control"]``.
    """

    control: LoadedControlNet
    scales_rule: ScalesRule
    input_popped: bool = True
    takes_y: bool = False
    encode_hint: Optional[Callable[[Tensor], Tensor]] = None
    cond_keys: Tuple[str, ...] = ()
    patch: Optional[int] = None
    expand: Optional[Callable[[ControlResiduals], ControlResiduals]] = None
    attention: Optional[AttentionFn] = None
    complete: Optional[Callable[[], LoadedControlNet]] = None
    install: Optional[Callable[[object], None]] = None

    def scales(self, strength: float, mode: ControlMode, soft_base: float, block_weights: str,
               node_id: str) -> Tuple[float, ...]:
        """One scale per residual the control computes, from the Apply node's inputs."""
        net = self.control.net
        weights = parse_block_weights(block_weights, net.num_residuals, node_id, net.residual_layout)
        try:
            return self.scales_rule(strength, mode, soft_base, weights)
        except ValueError as e:
            raise NodeInputError(node_id, "control_mode", str(e)) from None

    def token_grid(self, height: int, width: int) -> Optional[Tuple[int, int]]:
        """The image-token grid of a latent of ``height`` x ``width``; None for UNet residual maps."""
        return None if self.patch is None else token_grid((height, width), self.patch)


STAGED_KEY = "cnr_staged_controls"
"""``transformer_options`` entry holding the :class:`StagedControl` tuple of one model call."""


@dataclass(frozen=True, eq=False)
class StagedControl:
    """One control's share of one model call, for a base-model forward that runs the control itself.

    Attributes:
        net: the control module (on the call's device).
        embedding: its hint embedding for the rows it runs on, :math:`(R, ...)`.
        rows: the rows of the call's batch it runs on, :math:`(R,)` (the others have scale 0).
        row_scale: multiplier per such row, :math:`(R,)`.
        scales: one multiplier per residual, in the net's ``residual_layout`` order.
        token_weights: the mask on the image-token grid, :math:`(R, h w, 1)`, or None (everywhere).
        attention: the attention kernel the net takes, or None for the core's.
        reused: residual reuse at this call: the raw (unweighted) skips the net computed at the last computed
            step of this batch layout, one per residual in ``residual_layout`` order, each :math:`(R, L, D)`
            (refiner skips: :math:`(R, L_x, D)`); the forward adds these, weighted as this call says, instead of
            running the net. None = the net runs.
        keep: residual reuse at a computing call: an empty list the forward fills with the raw skips it
            computes, in the same order, for the sampler wrapper to keep once the call returns; never
            modified afterwards. None = nothing is kept.
    """

    net: object
    embedding: Tensor
    rows: Tensor
    row_scale: Tensor
    scales: Tuple[float, ...]
    token_weights: Optional[Tensor]
    attention: Optional[AttentionFn]
    reused: Optional[Tuple[Tensor, ...]] = None
    keep: Optional[List[Tensor]] = None


def encode_with_vae(vae, image: Tensor) -> Tensor:
    """The raw VAE latent of ``image`` (B, 3, H, W) in 0..1, as ComfyUI's ControlNet encodes hints
    during sampling: the models loaded before the VAE are loaded back afterwards."""
    loaded = [m for m in comfy.model_management.loaded_models(only_currently_used=True) if m is not None]
    latent = vae.encode(image.movedim(1, -1))
    comfy.model_management.load_models_gpu(loaded)
    return latent


def refuse_other_family(model_kind: str, model_label: str, control: LoadedControlNet, node_id: str) -> None:
    """Raise the Apply node's error for a control whose base family is not the MODEL's."""
    family = control.net.config.family.upper()
    fix = (f"load a ControlNet made for {model_label}" if model_kind != "unet" else
           f"use a {family} model, or a ControlNet made for {model_label}")
    what = "a UNet" if model_kind == "unet" else f"a {model_kind.upper()} transformer"
    raise NodeInputError(node_id, "controlnet", f"'{control.name}' is a {family} ControlNet but the model is "
                                                f"{model_label} ({what}); {fix}")
