"""Tiny seeded stand-ins for the model files the shipped workflows name, so that the workflows run
headless (tests, demo, the test server) where no weights can be downloaded.

Control-model files are written as tiny control models chosen by the words of their names; every other
model file is an empty placeholder, and ComfyUI's loaders (checkpoint, UNet, dual CLIP, VAE) are swapped
for ones that return tiny models whatever file they get. ComfyUI's own nodes, executor and samplers run
unchanged.
"""
from pathlib import Path

import torch

from comfy_host import (TINY_SDXL_CONFIG, TINY_UNET_CONFIG, boot, ensure_comfyui, init_builtin_extras,
                        tiny_controlnet_state_dict, tiny_t2i_adapter_state_dict, tiny_union_state_dict, tiny_unet,
                        tiny_vae)

# Flux dev-shaped (guidance embedding, 16 latent channels, 2x2 patches) at a tiny width; the text and pooled
# widths match TinyClip's.
TINY_FLUX_PARAMS = {"in_channels": 16, "out_channels": 16, "vec_in_dim": 32, "context_in_dim": 32, "hidden_size": 32,
                    "mlp_ratio": 4.0, "num_heads": 2, "depth": 2, "depth_single_blocks": 4, "axes_dim": [4, 4, 8],
                    "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True}


def randomize_flux(module, seed: int):
    """Every parameter random; QK-norm scales near 1 so that attention (and its rotary positions) matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.1 * noise if name.endswith(("_norm.scale", "norm_q.weight", "norm_k.weight",
                                                      "norm_added_q.weight", "norm_added_k.weight")) else 0.05 * noise)
    return module.eval()


def tiny_flux(seed: int = 0):
    """ComfyUI's own Flux dev MODEL (model_base.Flux in a ModelPatcher) at a tiny width, 2 + 4 blocks."""
    ensure_comfyui()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    model = comfy.supported_models.Flux({**TINY_FLUX_PARAMS, "image_model": "flux"}).get_model({})
    randomize_flux(model.diffusion_model, seed)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_flux_union_state_dict(seed: int = 0):
    """Diffusers-layout weights of an InstantX-style Flux Union ControlNet (10 modes, latent hint) sized for
    :func:`tiny_flux`, built with diffusers' own class and randomised."""
    from diffusers import FluxControlNetModel
    width = TINY_FLUX_PARAMS["hidden_size"]
    torch.manual_seed(seed)
    net = FluxControlNetModel(patch_size=1, in_channels=4 * TINY_FLUX_PARAMS["in_channels"], num_layers=2,
                              num_single_layers=2, num_attention_heads=TINY_FLUX_PARAMS["num_heads"],
                              attention_head_dim=width // TINY_FLUX_PARAMS["num_heads"],
                              joint_attention_dim=TINY_FLUX_PARAMS["context_in_dim"],
                              pooled_projection_dim=TINY_FLUX_PARAMS["vec_in_dim"], guidance_embeds=True,
                              axes_dims_rope=list(TINY_FLUX_PARAMS["axes_dim"]), num_mode=10)
    return {k: v.contiguous() for k, v in randomize_flux(net, seed + 1).state_dict().items()}


def tiny_control_file(name: str, seed: int):
    """The tiny stand-in for a control-model file, chosen by the words its name carries (test tooling: the
    pack itself never reads a file name)."""
    lowered = name.lower()
    if "flux" in lowered:
        return tiny_flux_union_state_dict(seed)
    if "union" in lowered:
        return tiny_union_state_dict(seed)
    if "t2i" in lowered:
        return tiny_t2i_adapter_state_dict(seed)
    return tiny_controlnet_state_dict(seed)


def is_sdxl_checkpoint(name: str) -> bool:
    """Checkpoint names of the SDXL family (``sd_xl_base_1.0.safetensors``, ``...sdxl...``)."""
    return "xl" in name.lower()


class TinyClip:
    """Stands in for a CLIP text encoder: a seeded embedding per prompt text, 32 wide like the tiny UNets.

    Args:
        pooled_dim: width of the pooled output (32 for the tiny SD1.5 UNet; 1280 for SDXL's y vector).
    """

    def __init__(self, pooled_dim: int = TINY_UNET_CONFIG["context_dim"]) -> None:
        self.pooled_dim = pooled_dim

    def tokenize(self, text, **kwargs):
        return text

    def encode_from_tokens(self, tokens, return_pooled=False, **kwargs):
        seed = int.from_bytes(tokens.encode("utf-8")[:8].ljust(8, b"\0"), "little") % (2 ** 31)
        gen = torch.Generator().manual_seed(seed)
        cond = torch.randn(1, 7, TINY_UNET_CONFIG["context_dim"], generator=gen)
        pooled = torch.randn(1, self.pooled_dim, generator=gen)
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, **kwargs):
        cond, pooled = self.encode_from_tokens(tokens, return_pooled=True)
        return [[cond, {"pooled_output": pooled}]]


# Which model folder each file input of the loaders names (ComfyUI's current folder names).
MODEL_FILE_INPUTS = {"ckpt_name": "checkpoints", "control_net_name": "controlnet", "unet_name": "diffusion_models",
                     "clip_name1": "text_encoders", "clip_name2": "text_encoders", "vae_name": "vae"}


def model_files(prompts) -> dict:
    """``{folder: {file names}}`` of every model file the API-format ``prompts`` name."""
    files = {}
    for prompt in prompts:
        for node in prompt.values():
            for name, value in node["inputs"].items():
                if name in MODEL_FILE_INPUTS and isinstance(value, str):
                    files.setdefault(MODEL_FILE_INPUTS[name], set()).add(value)
    return files


def write_tiny_model_files(folder: Path, files: dict) -> None:
    """Model files under ``folder/<kind>``: each ControlNet name a tiny seeded control model (one seed per
    name, in sorted order), every other name an empty placeholder (the loaders :func:`use_tiny_loaders`
    installs ignore what they read)."""
    from safetensors.torch import save_file
    for kind, names in files.items():
        (folder / kind).mkdir(parents=True, exist_ok=True)
        for i, name in enumerate(sorted(names)):
            if kind == "controlnet":
                save_file(tiny_control_file(name, seed=i), str(folder / kind / name))
            else:
                (folder / kind / name).write_bytes(b"")


def use_tiny_loaders(nodes) -> None:
    """ComfyUI's model loaders (in ``nodes``, ComfyUI's module) then return tiny stand-ins whatever file they
    are given: CheckpointLoaderSimple (tiny UNet, TinyClip, TAESD VAE), SDXL-shaped for SDXL names;
    UNETLoader a tiny Flux; DualCLIPLoader a TinyClip; VAELoader a 16-channel TAESD. Their inputs, and every
    other node, stay ComfyUI's own."""
    vae = tiny_vae()
    models = {False: (tiny_unet(), TinyClip(), vae),
              True: (tiny_unet(sdxl=True), TinyClip(TINY_SDXL_CONFIG["adm_in_channels"] - 6 * 256), vae)}

    class TinyCheckpointLoader(nodes.CheckpointLoaderSimple):
        def load_checkpoint(self, ckpt_name, *args, **kwargs):
            return models[is_sdxl_checkpoint(ckpt_name)]

    nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"] = TinyCheckpointLoader

    class TinyUNETLoader(nodes.UNETLoader):
        def load_unet(self, *args, **kwargs):
            return (tiny_flux(),)

    class TinyDualCLIPLoader(nodes.DualCLIPLoader):
        def load_clip(self, *args, **kwargs):
            return (TinyClip(TINY_FLUX_PARAMS["vec_in_dim"]),)

    class TinyVAELoader(nodes.VAELoader):
        def load_vae(self, *args, **kwargs):
            return (tiny_vae(latent_channels=TINY_FLUX_PARAMS["in_channels"]),)

    nodes.NODE_CLASS_MAPPINGS.update(UNETLoader=TinyUNETLoader, DualCLIPLoader=TinyDualCLIPLoader,
                                     VAELoader=TinyVAELoader)


def install_tiny_models(workflows, folder: Path):
    """Make every model a set of UI-format workflows names exist as tiny seeded stand-ins.

    Model files are written under ``folder`` (:func:`write_tiny_model_files`) and added to ComfyUI's
    search paths; the loaders return tiny models (:func:`use_tiny_loaders`). ComfyUI's own nodes,
    executor and samplers run unchanged.
    """
    import workflow_runner
    nodes = boot()
    init_builtin_extras(nodes)
    import folder_paths
    known = nodes.NODE_CLASS_MAPPINGS
    # Nodes this host lacks (Flux on the 2024 host) are left out; only widget values are read here, so links
    # to them do not matter.
    prompts = [workflow_runner.to_api_prompt({**w, "nodes": [n for n in w["nodes"] if n["type"] in known]}, known)
               for w in workflows]
    files = model_files(prompts)
    write_tiny_model_files(folder, files)
    for kind in files:
        folder_paths.add_model_folder_path(kind, str(folder / kind))
    use_tiny_loaders(nodes)
