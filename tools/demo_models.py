"""The small models trained here for the demo and the quality benchmark (``demo_models/``), and their loaders.

``tools/train_demo_models.py`` writes them; the shapes below are shared by the trainer and the loaders:

- ``cnr_demo_sd15.safetensors``: a checkpoint in the original SD layout, ``model.diffusion_model.*`` (a small
  SD1.5-layout UNet: 4 levels, attention on the middle two (none at full latent size, to keep CPU training
  short), epsilon prediction on SD's discrete schedule) and ``first_stage_model.*`` (a small SD-layout VAE:
  8x down, 4 latent channels). Its metadata holds both configs, since ComfyUI's loaders assume SD1.5's full
  widths.
- ``cnr_demo_controlnet_edges.safetensors``: a ControlNet in the SD1.5 layout (encoder copied from that UNet, zero
  convolutions), trained on Canny edge maps.

The text encoder is a stand-in with no weights: :class:`WordClip` gives each known word (objects and colours)
a seeded vector, so the same words always give the same conditioning.
"""
import json
import re
import zlib
from pathlib import Path

import torch

from comfy_host import REPO_ROOT, ensure_comfyui

MODELS_DIR = REPO_ROOT / "demo_models"
CHECKPOINT = "cnr_demo_sd15.safetensors"
CONTROLNET = "cnr_demo_controlnet_edges.safetensors"
IMAGE_SIZE = 128  # the size the models were trained at (latents 16 x 16)

UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 16, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": 2,
    "transformer_depth": [0, 0, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 1, 2, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 32, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [0, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0, 0],
}
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 128, "in_channels": 3, "out_ch": 3, "ch": 32,
                "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
HINT_BLOCK_CHANNELS = (16, 16, 32, 32)

# The stand-in text encoder's vocabulary: objects and colours; a few other words read as one of them.
VOCABULARY = ("sky", "sun", "hill", "house", "tree", "red", "orange", "yellow", "green", "blue", "brown", "white",
              "pink", "purple", "grey")
ALIASES = {"hills": "hill", "houses": "house", "cabin": "house", "trees": "tree", "wooden": "brown", "gray": "grey"}
CONTEXT_TOKENS = 12


def word_vector(word: str) -> torch.Tensor:
    """The fixed random vector of one word (seeded by its CRC-32)."""
    gen = torch.Generator().manual_seed(zlib.crc32(word.encode("utf-8")))
    return torch.randn(UNET_CONFIG["context_dim"], generator=gen)


def known_words(text: str):
    """The vocabulary words of ``text`` in order (aliases resolved, unknown words dropped)."""
    words = (ALIASES.get(w, w) for w in re.findall(r"[a-z]+", text.lower()))
    return [w for w in words if w in VOCABULARY][:CONTEXT_TOKENS]


def encode_words(text: str) -> torch.Tensor:
    """``(1, CONTEXT_TOKENS, context_dim)``: one vector per known word, then the padding vector."""
    words = known_words(text)
    return torch.stack([word_vector(w) for w in words] + [word_vector("<pad>")] * (CONTEXT_TOKENS - len(words)))[None]


class WordClip:
    """Stands in for CLIP with the trained demo models (CLIPTextEncode calls it as it calls a CLIP)."""

    def tokenize(self, text, **kwargs):
        return text

    def encode_from_tokens(self, tokens, return_pooled=False, **kwargs):
        cond = encode_words(tokens)
        pooled = cond.mean(1)
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(self, tokens, **kwargs):
        cond, pooled = self.encode_from_tokens(tokens, return_pooled=True)
        return [[cond, {"pooled_output": pooled}]]


def init_weights(module: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's default initialisation for ComfyUI's layers (ComfyUI builds them without initialising)."""
    for m in module.modules():
        for cls in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm, torch.nn.LayerNorm):
            if isinstance(m, cls):
                cls.reset_parameters(m)
                break
    return module


def build_sd15(unet_state=None):
    """ComfyUI's own SD1.5 model class (BaseModel with the discrete epsilon schedule) at the demo widths."""
    ensure_comfyui()
    import comfy.supported_models
    model = comfy.supported_models.SD15(dict(UNET_CONFIG)).get_model({})
    if unet_state is None:
        init_weights(model.diffusion_model)
    else:
        model.diffusion_model.load_state_dict(unet_state, strict=True)
    return model


def build_vae_model(state=None):
    """ComfyUI's AutoencoderKL (the SD VAE classes) at the demo widths."""
    ensure_comfyui()
    from comfy.ldm.models.autoencoder import AutoencoderKL
    vae = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=4)
    if state is None:
        init_weights(vae)
    else:
        vae.load_state_dict(state, strict=True)
    return vae


def controlnet_config():
    """The pack's ControlNetConfig matching :data:`UNET_CONFIG`."""
    from cnr_pack.controlnet_core import ControlNetConfig
    cfg = UNET_CONFIG
    return ControlNetConfig(model_channels=cfg["model_channels"], channel_mult=tuple(cfg["channel_mult"]),
                            num_res_blocks=(cfg["num_res_blocks"],) * len(cfg["channel_mult"]),
                            transformer_depth=tuple(cfg["transformer_depth"]), context_dim=cfg["context_dim"],
                            num_heads=cfg["num_heads"], hint_block_channels=HINT_BLOCK_CHANNELS)


def split_checkpoint(state: dict):
    """``(unet_state, vae_state)`` of a checkpoint's original-layout keys, prefixes stripped."""
    unet = {k[len("model.diffusion_model."):]: v for k, v in state.items() if k.startswith("model.diffusion_model.")}
    vae = {k[len("first_stage_model."):]: v for k, v in state.items() if k.startswith("first_stage_model.")}
    return unet, vae


def load_checkpoint(path: Path = None):
    """``(MODEL, CLIP, VAE)`` as ComfyUI's CheckpointLoaderSimple returns them, from the demo checkpoint."""
    ensure_comfyui()
    path = Path(path) if path is not None else MODELS_DIR / CHECKPOINT
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    from safetensors import safe_open
    from safetensors.torch import load_file
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if json.loads(meta.get("unet_config", "{}")) != UNET_CONFIG:
        raise RuntimeError(f"{path.name} was trained with other widths than tools/demo_models.py says: retrain it "
                           "with tools/train_demo_models.py")
    unet_state, vae_state = split_checkpoint(load_file(str(path)))
    model = build_sd15({k: v.float() for k, v in unet_state.items()})
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    vae = comfy.sd.VAE(sd={k: v.float() for k, v in vae_state.items()},
                       config={"params": {"ddconfig": dict(VAE_DDCONFIG), "embed_dim": 4}})
    return patcher, WordClip(), vae


def use_demo_loaders(nodes, path: Path = None) -> None:
    """ComfyUI's CheckpointLoaderSimple (in ``nodes``) then returns the trained demo models for any SD1.5 name."""
    models = load_checkpoint(path)

    class DemoCheckpointLoader(nodes.CheckpointLoaderSimple):
        def load_checkpoint(self, ckpt_name, *args, **kwargs):
            return models

    nodes.NODE_CLASS_MAPPINGS["CheckpointLoaderSimple"] = DemoCheckpointLoader
