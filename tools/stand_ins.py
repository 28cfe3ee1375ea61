"""Tiny seeded stand-ins for the model files the shipped workflows name, so that the workflows run
headless (tests, demo, the test server) where no weights can be downloaded.

Control-model files are written as tiny control models chosen by the words of their names; every other
model file is an empty placeholder, and ComfyUI's loaders (checkpoint, UNet, CLIP, dual CLIP, VAE) are swapped
for ones that return tiny models of the family the file name says, whatever the file holds. ComfyUI's own
nodes, executor and samplers run unchanged.
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


def randomize_transformer(module, seed: int):
    """Every parameter random: the scales of norms (QK-norms, Qwen-Image's text norm, Z-Image's block norms)
    near 1, so that attention and its rotary positions matter; everything else small."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            owner = name.split(".")[-2] if "." in name else ""
            p.copy_(1 + 0.1 * noise if "norm" in owner else 0.05 * noise)
    return module.eval()


def _patched(model):
    """A ComfyUI model in a ModelPatcher, as ComfyUI's loaders return it."""
    import comfy.model_management as mm
    import comfy.model_patcher
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_flux(seed: int = 0):
    """ComfyUI's own Flux dev MODEL (model_base.Flux in a ModelPatcher) at a tiny width, 2 + 4 blocks."""
    ensure_comfyui()
    import comfy.supported_models
    model = comfy.supported_models.Flux({**TINY_FLUX_PARAMS, "image_model": "flux"}).get_model({})
    randomize_transformer(model.diffusion_model, seed)
    return _patched(model)


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
    return {k: v.contiguous() for k, v in randomize_transformer(net, seed + 1).state_dict().items()}


# Qwen-Image-shaped (16 latent channels packed 2x2, rotary axes 8/4/4) at a tiny width, 3 blocks; text as wide
# as TinyClip's.
TINY_QWEN_PARAMS = {"patch_size": 2, "in_channels": 64, "out_channels": 16, "attention_head_dim": 16,
                    "num_attention_heads": 2, "joint_attention_dim": TINY_UNET_CONFIG["context_dim"],
                    "axes_dims_rope": (8, 4, 4)}
TINY_QWEN_BLOCKS = 3

# Z-Image (Turbo)-shaped: ComfyUI's Lumina2 NextDiT with Z-Image's modulation, its 30 main layers (the Fun
# ControlNets spread their skips over 30) and its 128-wide heads, at the narrowest width ComfyUI builds (its
# timestep embedding is 256 wide); captions as wide as TinyClip's.
TINY_Z_IMAGE_CONFIG = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": 256, "n_layers": 30,
                       "n_refiner_layers": 2, "n_heads": 2, "n_kv_heads": 2, "qk_norm": True,
                       "cap_feat_dim": TINY_UNET_CONFIG["context_dim"], "axes_dims": [32, 48, 48],
                       "axes_lens": [256, 64, 64], "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0,
                       "multiple_of": 1, "z_image_modulation": True, "time_scale": 1000.0,
                       "pad_tokens_multiple": 32}

Z_IMAGE_FUN_RELEASES = {
    "1.0": {"control_layers_places": [0, 2], "control_in_dim": 16, "add_control_noise_refiner": None},
    "2.0": {"control_layers_places": [0, 1, 2, 3], "control_in_dim": 33, "add_control_noise_refiner": "control_layers"},
    "2.1": {"control_layers_places": [0, 1, 2, 3], "control_in_dim": 33,
            "add_control_noise_refiner": "control_noise_refiner"},
    "2.1-lite": {"control_layers_places": [0, 2], "control_in_dim": 33,
                 "add_control_noise_refiner": "control_noise_refiner"},
}
"""diffusers ``ZImageControlNetModel`` arguments per Z-Image Fun release, scaled down to 2 or 4 control layers
(``control_refiner_layers_places`` is [0, 1])."""


def tiny_qwen_image(seed: int = 0):
    """ComfyUI's own Qwen-Image MODEL (model_base.QwenImage) at a tiny width. Needs a current ComfyUI."""
    ensure_comfyui()
    import comfy.supported_models
    family = comfy.supported_models.QwenImage({**TINY_QWEN_PARAMS, "image_model": "qwen_image",
                                               "num_layers": TINY_QWEN_BLOCKS})
    model = family.get_model({})
    randomize_transformer(model.diffusion_model, seed)
    return _patched(model)


def tiny_qwen_inpainting_state_dict(seed: int = 0):
    """Diffusers-layout weights of an InstantX Qwen-Image Inpainting ControlNet (a mask channel packed 2x2 on top
    of the latent) sized for :func:`tiny_qwen_image`, built with diffusers' own class and randomised."""
    from diffusers import QwenImageControlNetModel
    torch.manual_seed(seed)
    net = QwenImageControlNetModel(**TINY_QWEN_PARAMS, num_layers=2, extra_condition_channels=4)
    return {k: v.contiguous() for k, v in randomize_transformer(net, seed + 1).state_dict().items()}


def tiny_wan_vae(seed: int = 0):
    """ComfyUI's own Wan-2.1 VAE (the Qwen-Image VAE: 16 channels, 3-D latents), detected by ``comfy.sd.VAE`` from
    its keys, at 8 base channels with seeded random weights (RMS-norm gains near 1). Needs a current ComfyUI."""
    ensure_comfyui()
    import comfy.ldm.wan.vae
    import comfy.sd
    net = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    gen = torch.Generator().manual_seed(seed)
    state = {k: 0.1 * torch.randn(v.shape, generator=gen) + (1.0 if k.endswith("gamma") else 0.0)
             for k, v in net.state_dict().items()}
    vae = comfy.sd.VAE(sd=state)
    if not isinstance(vae.first_stage_model, comfy.ldm.wan.vae.WanVAE) or vae.latent_channels != 16:
        raise RuntimeError("ComfyUI did not detect the tiny Wan-2.1 VAE from its keys")
    return vae


def tiny_z_image(seed: int = 0):
    """ComfyUI's own Z-Image MODEL (Lumina2's NextDiT, Z-Image config) at a tiny width. Needs a current ComfyUI."""
    ensure_comfyui()
    import comfy.supported_models
    model = comfy.supported_models.ZImage(dict(TINY_Z_IMAGE_CONFIG)).get_model({})
    randomize_transformer(model.diffusion_model, seed)
    return _patched(model)


def z_image_fun_release_state_dict(version: str, reference) -> dict:
    """A diffusers ``ZImageControlNetModel``'s own weights as the release's file holds them.

    2.0's file carries a control refiner whose weights are all zero (diffusers' ``control_layers`` variant has
    none): it is added here, zeros where the release has zeros.
    """
    own = ("control_layers.", "control_noise_refiner.", "control_all_x_embedder.")
    sd = {k: v.clone().contiguous() for k, v in reference.state_dict().items() if k.startswith(own)}
    if version == "2.0":
        for k, v in reference.control_layers.state_dict().items():
            if k.split(".")[0] in ("0", "1"):
                sd[f"control_noise_refiner.{k}"] = torch.zeros_like(v)
    return sd


def tiny_z_image_fun_state_dict(seed: int = 0, version: str = "2.1"):
    """Weights of a Z-Image Turbo Fun ControlNet ``version`` file sized for :func:`tiny_z_image`, built with
    diffusers' own class and randomised."""
    from diffusers import ZImageControlNetModel
    cfg = TINY_Z_IMAGE_CONFIG
    torch.manual_seed(seed)
    net = ZImageControlNetModel(**Z_IMAGE_FUN_RELEASES[version], control_refiner_layers_places=[0, 1],
                                dim=cfg["dim"], n_refiner_layers=cfg["n_refiner_layers"], n_heads=cfg["n_heads"],
                                n_kv_heads=cfg["n_kv_heads"])
    return z_image_fun_release_state_dict(version, randomize_transformer(net, seed + 1))


def is_z_image_name(name: str) -> bool:
    """Z-Image file names (``z_image_turbo_bf16.safetensors``, ``Z-Image-Turbo-Fun-Controlnet-...``)."""
    lowered = name.lower()
    return any(word in lowered for word in ("z_image", "z-image", "zimage"))


def tiny_control_file(name: str, seed: int):
    """The tiny stand-in for a control-model file, chosen by the words its name carries (test tooling: the
    pack itself never reads a file name)."""
    lowered = name.lower()
    if "qwen" in lowered and "inpaint" in lowered:
        return tiny_qwen_inpainting_state_dict(seed)
    if is_z_image_name(name):
        return tiny_z_image_fun_state_dict(seed)
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
                     "clip_name": "text_encoders", "clip_name1": "text_encoders", "clip_name2": "text_encoders",
                     "vae_name": "vae"}


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
    UNETLoader a tiny Qwen-Image, Z-Image or (other names) Flux MODEL; CLIPLoader and DualCLIPLoader a TinyClip;
    VAELoader a tiny Wan-2.1 VAE for Qwen-Image names, else a 16-channel TAESD. Their inputs, and every other
    node, stay ComfyUI's own."""
    vae = tiny_vae()
    models = {False: (tiny_unet(), TinyClip(), vae),
              True: (tiny_unet(sdxl=True), TinyClip(TINY_SDXL_CONFIG["adm_in_channels"] - 6 * 256), vae)}

    class TinyCheckpointLoader(nodes.CheckpointLoaderSimple):
        def load_checkpoint(self, ckpt_name, *args, **kwargs):
            return models[is_sdxl_checkpoint(ckpt_name)]

    nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"] = TinyCheckpointLoader

    class TinyUNETLoader(nodes.UNETLoader):
        def load_unet(self, unet_name, *args, **kwargs):
            if "qwen" in unet_name.lower():
                return (tiny_qwen_image(),)
            return (tiny_z_image() if is_z_image_name(unet_name) else tiny_flux(),)

    class TinyCLIPLoader(nodes.CLIPLoader):
        def load_clip(self, *args, **kwargs):
            return (TinyClip(),)

    class TinyDualCLIPLoader(nodes.DualCLIPLoader):
        def load_clip(self, *args, **kwargs):
            return (TinyClip(TINY_FLUX_PARAMS["vec_in_dim"]),)

    class TinyVAELoader(nodes.VAELoader):
        def load_vae(self, vae_name, *args, **kwargs):
            if "qwen" in vae_name.lower():
                return (tiny_wan_vae(),)
            return (tiny_vae(latent_channels=TINY_FLUX_PARAMS["in_channels"]),)

    nodes.NODE_CLASS_MAPPINGS.update(UNETLoader=TinyUNETLoader, CLIPLoader=TinyCLIPLoader,
                                     DualCLIPLoader=TinyDualCLIPLoader, VAELoader=TinyVAELoader)


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
