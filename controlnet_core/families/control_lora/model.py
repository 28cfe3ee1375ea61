r"""Control-LoRA (Stability AI ``control-lora-*-rank128/256``): a ControlNet stored as a low-rank difference.

The difference is from the base UNet the ControlNet was trained on. The file holds, in the
original (``cldm``) layout and marked by an empty ``lora_controlnet`` tensor:
``<module>.up`` :math:`(O, r[, 1, 1])` and ``<module>.down`` :math:`(r, I[, k, k])` for every weight
the ControlNet shares with the UNet encoder, and full tensors for the rest (hint embedding, zero
convolutions, biases and norms). The ControlNet weight is

.. math:: W = W_\text{unet} + \text{up} \cdot \text{down}

with no scale (as ComfyUI's ``ControlLoraOps``). ComfyUI recomputes the product inside every
forward; here it is merged once into a plain :class:`ControlNet`.

Without the base weights a file loads into a :class:`ControlLora`, which keeps the file's tensors
until :meth:`ControlLora.merge` is given the UNet.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from ..controlnet.convert import _level_layout_from_diffusers, _prefix_pairs, _rename
from ...assembly import assemble
from ...errors import ControlNetFormatError
from ..controlnet.format import detect_config, family_of
from ..controlnet.model import ControlNet

__all__ = ["MARKER", "ControlLora", "ControlLoraConfig", "unet_encoder_weights"]

MARKER = "lora_controlnet"
_ENCODER_PREFIXES = ("time_embed.", "label_emb.", "input_blocks.", "middle_block.")
_DIFFUSERS_ENCODER_PREFIXES = ("conv_in.", "time_embedding.", "add_embedding.", "down_blocks.", "mid_block.")
_UNET_PREFIXES = ("model.diffusion_model.", "diffusion_model.")



@dataclass(frozen=True)
class ControlLoraConfig:
    """What a Control-LoRA file says about the model it fits.

    Attributes:
        family: ``"sd1"``, ``"sd2"``, ``"sdxl"`` or ``"custom"`` (other widths).
        context_dim: cross-attention context width of the base model.
        adm_in_channels: width of the base model's ``y`` vector (SDXL), or None.
        hint_channels: channels of the control image.
        rank: largest rank among the low-rank pairs.
    """

    family: str
    context_dim: int
    adm_in_channels: Optional[int]
    hint_channels: int
    rank: int

    def describe(self) -> str:
        """E.g. ``"sdxl (context width 2048, y width 2816)"``, for messages."""
        return _describe(self.context_dim, self.adm_in_channels)


def _describe(context_dim: int, adm_in_channels: Optional[int]) -> str:
    y = f", y width {adm_in_channels}" if adm_in_channels else ""
    return f"{family_of(context_dim, adm_in_channels)} (context width {context_dim}{y})"


def _in_width(key: str, full: Mapping[str, Tensor], low_rank: Mapping[str, Tuple[Tensor, Tensor]]) -> Optional[int]:
    """Input width of a weight stored in full or as an up/down pair (the down factor's columns)."""
    if key in full:
        return full[key].shape[1]
    return low_rank[key][1].shape[1] if key in low_rank else None


def unet_encoder_weights(base_unet: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """The UNet weights a ControlNet copies (time and y embeddings, input and middle blocks).

    Args:
        base_unet: a UNet state dict in the original layout (ComfyUI's
            ``model.diffusion_model.state_dict()``, with or without a ``model.diffusion_model.``
            prefix) or in diffusers' ``UNet2DConditionModel`` layout.

    Returns:
        The encoder tensors under original-layout names (shared, not copied); decoder weights dropped.

    Raises:
        ControlNetFormatError: neither layout is recognised.
    """
    stripped = {}
    for key, value in base_unet.items():
        for prefix in _UNET_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        stripped[key] = value
    if "input_blocks.0.0.weight" in stripped:
        return {k: v for k, v in stripped.items() if k.startswith(_ENCODER_PREFIXES)}
    if "conv_in.weight" in stripped and any(k.startswith("down_blocks.") for k in stripped):
        encoder = {k: v for k, v in stripped.items() if k.startswith(_DIFFUSERS_ENCODER_PREFIXES)}
        return _rename(encoder, _prefix_pairs(_level_layout_from_diffusers(list(encoder)), 0))
    raise ControlNetFormatError(
        f"the base UNet weights are in no known layout (neither input_blocks.0.0.weight nor conv_in.weight "
        f"among {len(stripped)} keys, e.g. {sorted(stripped)[:3]}); pass the MODEL's diffusion_model state dict")


@dataclass(frozen=True, eq=False)
class ControlLora:
    """A Control-LoRA file waiting for the base UNet weights it was made for.

    :meth:`merge` completes it into a :class:`ControlNet`.

    Attributes:
        config: the family, widths and rank the file implies.
        low_rank: ``{weight key: (up, down)}`` for the weights shared with the UNet.
        full: every other tensor, by key (original layout).
    """

    family: ClassVar[str] = "control_lora"
    config: ControlLoraConfig
    low_rank: Mapping[str, Tuple[Tensor, Tensor]]
    full: Mapping[str, Tensor]

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Tensor]) -> "ControlLora":
        """Split a Control-LoRA state dict into low-rank pairs and full tensors.

        Raises:
            ControlNetFormatError: an unpaired ``.up``/``.down``, a pair of mismatched rank, no
                hint embedding or no cross-attention.
        """
        # ComfyUI skips the marker and any key holding "__" as well (metadata some tools store).
        tensors = {k: v for k, v in state_dict.items() if k != MARKER and "__" not in k}
        ups = {k[: -len(".up")]: v for k, v in tensors.items() if k.endswith(".up")}
        downs = {k[: -len(".down")]: v for k, v in tensors.items() if k.endswith(".down")}
        unpaired = sorted(set(ups) ^ set(downs))
        if unpaired:
            raise ControlNetFormatError(
                f"Control-LoRA has {len(unpaired)} up/down tensors without their partner, e.g. {unpaired[:3]}")
        low_rank = {}
        for module, up in ups.items():
            down = downs[module]
            if up.shape[1] != down.shape[0]:
                raise ControlNetFormatError(
                    f"Control-LoRA {module}: up {tuple(up.shape)} and down {tuple(down.shape)} differ in rank")
            low_rank[module + ".weight"] = (up, down)
        full = {k: v for k, v in tensors.items() if not k.endswith((".up", ".down"))}
        if "input_hint_block.0.weight" not in full:
            raise ControlNetFormatError("Control-LoRA without a hint embedding (input_hint_block.0.weight)")
        to_k = next((k for k in [*full, *low_rank] if k.endswith("attn2.to_k.weight")), None)
        if to_k is None:
            raise ControlNetFormatError("Control-LoRA without cross-attention weights: not a Stable Diffusion one")
        context_dim = _in_width(to_k, full, low_rank)
        adm = _in_width("label_emb.0.0.weight", full, low_rank)
        config = ControlLoraConfig(
            family=family_of(context_dim, adm), context_dim=context_dim, adm_in_channels=adm,
            hint_channels=full["input_hint_block.0.weight"].shape[1],
            rank=max((up.shape[1] for up, _ in low_rank.values()), default=0),
        )
        return cls(config=config, low_rank=low_rank, full=full)

    def merge(self, base_unet: Mapping[str, Tensor], *, dtype: Optional[torch.dtype] = None,
              device=None) -> ControlNet:
        """The ControlNet with ``W = W_unet + up @ down`` computed once.

        Args:
            base_unet: the base model's UNet weights (see :func:`unet_encoder_weights`).
            dtype: compute dtype of the ControlNet; None takes the base weights' dtype. The product
                is formed in float32 and rounded once to ``dtype``.
            device: where the ControlNet lives (and the merge runs); None keeps each tensor's device.

        Returns:
            A :class:`ControlNet` in eval mode whose tensors share no storage with ``base_unet``.

        Raises:
            ControlNetFormatError: the base weights are for another family, lack a weight the
                Control-LoRA adds to, or have shapes that do not fit.
        """
        base = unet_encoder_weights(base_unet)
        self._check_family(base)
        dtype = dtype or next(v.dtype for v in base.values() if v.is_floating_point())
        merged = {}
        for key, (up, down) in self.low_rank.items():
            w = base.get(key)
            if w is None:
                raise ControlNetFormatError(
                    f"the base UNet has no {key}, which this {self.config.describe()} Control-LoRA adds to")
            if up.shape[0] != w.shape[0] or down[0].numel() != w[0].numel():
                raise ControlNetFormatError(
                    f"{key}: the base UNet's {tuple(w.shape)} does not fit the Control-LoRA's up "
                    f"{tuple(up.shape)} @ down {tuple(down.shape)}")
            where = device or w.device
            delta = up.to(where, torch.float32).flatten(1) @ down.to(where, torch.float32).flatten(1)
            merged[key] = (w.to(where, torch.float32) + delta.reshape(w.shape)).to(dtype)
        for key, value in self.full.items():
            if key in base and base[key].shape != value.shape:
                raise ControlNetFormatError(
                    f"{key}: the Control-LoRA's {tuple(value.shape)} does not fit the base UNet's "
                    f"{tuple(base[key].shape)}")
            merged[key] = value.to(device=device, dtype=dtype, copy=True)
        for key, value in base.items():
            if key not in merged:
                merged[key] = value.to(device=device, dtype=dtype, copy=True)
        config = detect_config(merged)
        return assemble(lambda: ControlNet(config), merged, f"{config.family} ControlNet the Control-LoRA merged with "
                                                            "the base UNet should form")

    def _check_family(self, base: Mapping[str, Tensor]) -> None:
        to_k = next((v for k, v in base.items() if k.endswith("attn2.to_k.weight")), None)
        if to_k is None:
            raise ControlNetFormatError("the base UNet has no cross-attention: not a Stable Diffusion UNet")
        label = base.get("label_emb.0.0.weight")
        context_dim, adm = to_k.shape[1], None if label is None else label.shape[1]
        if (context_dim, adm) != (self.config.context_dim, self.config.adm_in_channels):
            raise ControlNetFormatError(
                f"this Control-LoRA was made for {self.config.describe()} but the base model is "
                f"{_describe(context_dim, adm)}; use a Control-LoRA made for {family_of(context_dim, adm)} "
                f"or a {self.config.family} model")
