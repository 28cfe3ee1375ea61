"""Weights this core recognises but does not build, each refused with what was found and what to use.

Every entry has the family seam's ``claims(state_dict)`` (keys and shapes only) and a ``build``
that raises :class:`ControlNetFormatError` with the message, so the format table can list them
beside the supported families. :data:`REFUSALS` is ordered specific before broad:

* ControlNet-LLLite and ControlNet-XS work inside the UNet's blocks, not as residuals.
* HunyuanDiT ControlNets and Stable Cascade ControlNets: not yet supported here, ComfyUI's own loader
  takes them (detection keys as ``comfy/controlnet.py:load_controlnet_state_dict``). (Flux, SD3/SD3.5,
  Qwen-Image InstantX and Qwen-Image-2512 Fun ControlNets are families of their own.)
* T2I style adapters, LoRAs, checkpoints, UNets, VAEs and text encoders are other kinds of model.
* Comfy-Org's quantized re-releases (int8 layers, a ``<layer>.comfy_quant`` tensor each): their layers
  compute only through newer ComfyUI's quantized operations (ComfyUI 0.3.75 cannot load them either); the
  message names the unquantized release.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Tuple

from torch import Tensor

from ..assembly import numbered_indices
from ..errors import ControlNetFormatError

__all__ = ["BROAD_REFUSALS", "REFUSALS", "Refusal", "refusal_for"]

_COMFY_CN = "use ComfyUI's own Load ControlNet Model and Apply ControlNet nodes"
_DIT_TODO = f"not yet supported by this pack; {_COMFY_CN}"


@dataclass(frozen=True)
class Refusal:
    """A recognised format the core refuses.

    Attributes:
        name: short id for the format table.
        claims: True when the weights are of this format (keys and shapes only).
        describe: the refusal message for claimed weights: what they are and what to use instead.
    """

    name: str
    claims: Callable[[Mapping[str, Tensor]], bool]
    describe: Callable[[Mapping[str, Tensor]], str]

    def build(self, state_dict: Mapping[str, Tensor], *, dtype=None, device=None, **options):
        """Raise :class:`ControlNetFormatError` with :attr:`describe`'s message."""
        raise ControlNetFormatError(self.describe(state_dict))


def _has_part(state_dict: Mapping[str, Tensor], names) -> bool:
    return any(part in names for k in state_dict for part in k.split("."))


def _lllite(sd: Mapping[str, Tensor]) -> str:
    modules = sorted({k.split(".")[0] for k in sd if "lllite" in k})
    return (f"ControlNet-LLLite weights (kohya-ss): {len(modules)} modules such as {modules[0]!r} that change the "
            "UNet's attention inputs instead of adding residuals, which this pack cannot apply; load them with "
            "kohya-ss/ControlNet-LLLite-ComfyUI or ComfyUI-Advanced-ControlNet")


_XS_PARTS = {"ctrl_to_base", "base_to_ctrl", "control_to_base_for_conv_in", "enc_zero_convs_in", "enc_zero_convs_out"}


def _controlnet_xs(sd: Mapping[str, Tensor]) -> str:
    fused = any(k.startswith(("base_conv_in.", "base_time_embedding.")) for k in sd)
    what = "a UNet fused with a ControlNet-XS" if fused else "a ControlNet-XS"
    return (f"{what} (base_to_ctrl / ctrl_to_base connections): it trades features with the UNet inside every "
            "block, so it cannot run as residuals beside an unchanged model; neither this pack nor ComfyUI runs "
            "it; use diffusers' StableDiffusionControlNetXSPipeline or StableDiffusionXLControlNetXSPipeline")


def _blocks(sd: Mapping[str, Tensor], *prefixes: str) -> str:
    counts = [len(numbered_indices(sd, re.escape(p) + r"\.(\d+)\.")) for p in prefixes]
    return ", ".join(f"{n} {p}" for n, p in zip(counts, prefixes))


def _dit(title: str, *prefixes: str) -> Callable[[Mapping[str, Tensor]], str]:
    def describe(sd: Mapping[str, Tensor]) -> str:
        return f"{title} ControlNet ({_blocks(sd, *prefixes)}): {_DIT_TODO}"
    return describe


def _has(*keys: str) -> Callable[[Mapping[str, Tensor]], bool]:
    return lambda sd: all(k in sd for k in keys)


_LORA = re.compile(r"(^lora_(unet|te\d?)_|\.lora_(up|down|A|B)\.|\.lora\.(up|down)\.|\.(hada|lokr)_w\d)")


def _is_lora(sd: Mapping[str, Tensor]) -> bool:
    # Stability's Control-LoRAs are low-rank too; their marker key keeps them out.
    return "lora_controlnet" not in sd and any(_LORA.search(k) for k in sd)


def _lora(sd: Mapping[str, Tensor]) -> str:
    example = next(k for k in sd if _LORA.search(k))
    return (f"a LoRA for a diffusion model or text encoder (e.g. {example!r}), not a ControlNet (a Control-LoRA "
            "carries a 'lora_controlnet' key, this file has none): load it with Load LoRA")


_OTHER_MODELS = (  # (key prefixes, what it is, where it belongs)
    (("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.embedders."),
     "a full checkpoint (diffusion model, VAE and text encoders)", "Load Checkpoint"),
    (("output_blocks.", "up_blocks.", "out.2."), "a UNet with decoder blocks", "Load Diffusion Model"),
    (("double_blocks.", "single_blocks.", "joint_blocks.", "final_layer."), "a diffusion transformer",
     "Load Diffusion Model"),
    (("decoder.up.", "encoder.down.", "decoder.up_blocks.", "encoder.down_blocks."), "a VAE", "Load VAE"),
    (("text_model.encoder.", "transformer.text_model.", "encoder.block.", "shared.weight"), "a text encoder",
     "Load CLIP"),
)


def _other_model(sd: Mapping[str, Tensor]) -> Optional[Tuple[str, str, str]]:
    for prefixes, what, node in _OTHER_MODELS:
        found = next((k for k in sd if k.startswith(prefixes)), None)
        if found is not None:
            return found, what, node
    return None


def _describe_other(sd: Mapping[str, Tensor]) -> str:
    found, what, node = _other_model(sd)
    return f"{what}, with keys such as {found!r}; not a control model: load it with {node} and pick a ControlNet here"


def _is_comfy_quantized(sd: Mapping[str, Tensor]) -> bool:
    return any(k.endswith(".comfy_quant") for k in sd)


def _comfy_quantized(sd: Mapping[str, Tensor]) -> str:
    layers = sum(k.endswith(".comfy_quant") for k in sd)
    if "control_all_x_embedder.2-1.weight" in sd:
        what = "a Z-Image Fun ControlNet"
        release = ("alibaba-pai's unquantized release (e.g. Z-Image-Turbo-Fun-Controlnet-Union-2.1-8steps.safetensors "
                   "from huggingface.co/alibaba-pai/Z-Image-Turbo-Fun-Controlnet-Union-2.1)")
    else:
        what = "a model"
        release = "the unquantized release of the same model"
    return (f"a Comfy-Org quantized (int8) copy of {what}: {layers} layers carry '.comfy_quant' entries, which "
            f"this pack does not run; download {release} into models/model_patches or models/controlnet")


REFUSALS: Tuple[Refusal, ...] = (
    Refusal("comfy_quantized", _is_comfy_quantized, _comfy_quantized),
    Refusal("controlnet_lllite", lambda sd: any("lllite" in k for k in sd), _lllite),
    Refusal("controlnet_xs", lambda sd: _has_part(sd, _XS_PARTS), _controlnet_xs),
    Refusal("hunyuan_dit_controlnet", lambda sd: any(k.startswith("after_proj_list.") for k in sd),
            _dit("a HunyuanDiT", "after_proj_list")),
    Refusal("stable_cascade_controlnet", lambda sd: any(k.startswith("backbone.") for k in sd),
            lambda sd: f"a Stable Cascade ControlNet: {_DIT_TODO}"),
    Refusal("t2i_style_adapter", _has("style_embedding"),
            lambda sd: ("a T2I style adapter: it adds image tokens to the prompt, not residuals; load it with "
                        "ComfyUI's Load Style Model and Apply Style Model")),
    Refusal("lora", _is_lora, _lora),
)

# Broad: their key prefixes also occur in control models, so the format table tries them last.
BROAD_REFUSALS: Tuple[Refusal, ...] = (
    Refusal("not_a_control_model", lambda sd: _other_model(sd) is not None, _describe_other),
)


def refusal_for(state_dict: Mapping[str, Tensor]) -> Optional[Refusal]:
    """The first refusal (specific, then broad) claiming ``state_dict``, or None."""
    return next((r for r in REFUSALS + BROAD_REFUSALS if r.claims(state_dict)), None)
