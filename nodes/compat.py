"""Every ComfyUI version difference the pack handles, each behind a feature check.

One function per difference; each says which ComfyUI builds need which branch. Nothing here
imports a module newer than the oldest supported host at import time.
"""
from __future__ import annotations

import inspect
import os

import comfy.model_management
import comfy.model_patcher
import comfy.model_sampling
import comfy.samplers

ADDITIONAL_MODELS_KEY = "cnr_controlnet"


def patcher_class():
    """The patcher class ComfyUI builds its own ControlNets with.

    ``CoreModelPatcher`` (2026 builds, rebound to the dynamic-VRAM patcher on NVIDIA); plain
    ``ModelPatcher`` before.
    """
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def model_sampling(model):
    """The MODEL's sampling object; ``get_model_object`` exists from 2024-06 builds on."""
    if hasattr(model, "get_model_object"):
        return model.get_model_object("model_sampling")
    return model.model.model_sampling


def is_flow_matching(model) -> bool:
    """Whether the MODEL samples by flow matching (SD3, Flux, ...): ComfyUI's ``CONST`` parameterisation,
    which builds from 2024-06 (SD3 support) on have and older ones lack, having no such models."""
    const = getattr(comfy.model_sampling, "CONST", None)
    return const is not None and isinstance(model_sampling(model), const)


def attach_additional_model(model, patcher) -> bool:
    """Have ComfyUI load ``patcher`` with ``model`` for sampling (ModelPatcher.set_additional_models,
    2024-12 builds on). Returns False on older builds, where the wrapper loads it itself."""
    if not hasattr(model, "set_additional_models"):
        return False
    model.set_additional_models(ADDITIONAL_MODELS_KEY,
                                model.get_additional_models_with_key(ADDITIONAL_MODELS_KEY) + [patcher])
    return True


def on_sampling_end(model, callback) -> bool:
    """Call ``callback(patcher)`` when sampling with ``model`` ends (the ON_CLEANUP patcher callback,
    2024-11 builds on). Returns False on older builds, which have no such hook."""
    try:
        from comfy.patcher_extension import CallbacksMP
    except ImportError:
        return False
    if not hasattr(model, "add_callback"):
        return False
    model.add_callback(CallbacksMP.ON_CLEANUP, callback)
    return True


def load_fully(patcher) -> None:
    """Load ``patcher`` onto its device with every weight there (``force_full_load``, 2024-08 builds on),
    so one forward never mixes devices after a partial (low VRAM) load."""
    if "force_full_load" in inspect.signature(comfy.model_management.load_models_gpu).parameters:
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    else:
        comfy.model_management.load_models_gpu([patcher])


def schedule_function(model, scheduler: str):
    """``n -> sigmas`` for this model and scheduler: ``calculate_sigmas`` (2024-06 builds on) or the
    older ``calculate_sigmas_scheduler``."""
    if hasattr(comfy.samplers, "calculate_sigmas"):
        sampling = model_sampling(model)
        return lambda n: comfy.samplers.calculate_sigmas(sampling, scheduler, n).cpu()
    return lambda n: comfy.samplers.calculate_sigmas_scheduler(model.model, scheduler, n).cpu()


def model_dtype(model):
    """The dtype the MODEL computes in, as ComfyUI's own Control-LoRA takes it: the manual-cast dtype
    when weights are stored in another one (``manual_cast_dtype``, 2024-01 builds on), else theirs."""
    return getattr(model.model, "manual_cast_dtype", None) or model.model.get_dtype()


def attention_kernel():
    """ComfyUI's attention as the core's ``AttentionFn``: the kernel its Flux and MMDiT call
    (``optimized_attention``, picked by its launch options: PyTorch, xformers, SageAttention, split...);
    None (the core's PyTorch attention) on builds whose kernels take no ``skip_reshape`` (some 2024 ones).
    Per-model overrides through ``transformer_options`` do not reach the ControlNet."""
    from comfy.ldm.modules.attention import optimized_attention
    if "skip_reshape" not in inspect.signature(optimized_attention).parameters:
        return None

    def attend(q, k, v):
        return optimized_attention(q, k, v, q.shape[1], skip_reshape=True)
    return attend


def model_folder(name: str) -> str:
    """The ``folder_paths`` key ``name`` (e.g. ``model_patches``, 2025-08 builds on), registered under
    ``models/<name>`` on builds that lack it, so the pack's loader lists the files users keep there."""
    import folder_paths
    if name not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[name] = (
            [os.path.join(folder_paths.models_dir, name)], set(folder_paths.supported_pt_extensions))
    return name


def composable_z_image(dm) -> bool:
    """Whether ComfyUI's Z-Image model is the one the pack's Z-Image forward restates (0.3.75's ``NextDiT``:
    ``patchify_and_embed`` and block signatures as there). Newer builds change them (and add per-layer patch
    hooks, :func:`has_z_image_patches`)."""
    needed = ("x_embedder", "cap_embedder", "t_embedder", "noise_refiner", "context_refiner", "layers",
              "final_layer", "rope_embedder", "unpatchify", "pad_tokens_multiple", "time_scale")
    if not all(hasattr(dm, name) for name in needed):
        return False
    embed = list(inspect.signature(dm.patchify_and_embed).parameters)
    block = list(inspect.signature(dm.layers[0].forward).parameters)
    return (embed == ["x", "cap_feats", "cap_mask", "t", "num_tokens", "transformer_options"]
            and block == ["x", "x_mask", "freqs_cis", "adaln_input", "transformer_options"])


def has_z_image_patches(model) -> bool:
    """Whether ComfyUI's Z-Image model calls patches after its noise-refiner blocks and main layers (builds from
    2025-12 on: ``set_model_noise_refiner_patch``, with ``set_model_double_block_patch``)."""
    return hasattr(model, "set_model_noise_refiner_patch") and hasattr(model, "set_model_double_block_patch")


def add_diffusion_model_wrapper(model, key: str, wrapper) -> None:
    """Wrap the diffusion model's forward of this MODEL clone (``WrappersMP.DIFFUSION_MODEL``, 2024-12 builds
    on; every build with Z-Image has it) with ``wrapper`` under ``key``, unless one is there already."""
    from comfy.patcher_extension import WrappersMP
    if not model.get_wrappers(WrappersMP.DIFFUSION_MODEL, key):
        model.add_wrapper_with_key(WrappersMP.DIFFUSION_MODEL, key, wrapper)


def vae_downscale(vae) -> int:
    """Image pixels per latent pixel of a ComfyUI VAE: its own report on builds from 2024-07 on, else 8
    (every VAE of the 2024 hosts' image models)."""
    scale = getattr(vae, "spacial_compression_encode", None)
    return int(scale()) if scale is not None else 8
