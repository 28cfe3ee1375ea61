"""Tiny seeded Z-Image transformers and Fun ControlNets built with diffusers (the oracle), and their inputs.

Sizes follow diffusers' own Z-Image pipeline test (32-wide tokens, 2 heads, rotary axes 8/4/4, 16-wide
captions, 4 main layers, 2 refiner layers); the ControlNets are the four releases' shapes scaled down:
v1 (plain refiner, 16-channel context), 2.0 (refiner stage run by the control layers, its own refiner
weights zero), 2.1 (control refiner) and 2.1-lite (fewer control layers).
"""
from typing import Dict, List, Sequence, Tuple

import torch
from diffusers import ZImageControlNetModel, ZImageTransformer2DModel

from cnr_pack.controlnet_core.families.z_image.model import ZImageControlNet, position_ids
from cnr_pack.controlnet_core.layers.rotary import rope_frequencies
from stand_ins import Z_IMAGE_FUN_RELEASES as VERSIONS
from stand_ins import z_image_fun_release_state_dict as release_state_dict  # noqa: F401  (re-exported)

AXES_DIM = (8, 4, 4)
CAPTION_DIM = 16
LATENT_CHANNELS = 16
BASE = {"all_patch_size": (2,), "all_f_patch_size": (1,), "in_channels": LATENT_CHANNELS, "dim": 32,
        "n_layers": 4, "n_refiner_layers": 2, "n_heads": 2, "n_kv_heads": 2, "norm_eps": 1e-5, "qk_norm": True,
        "cap_feat_dim": CAPTION_DIM, "rope_theta": 256.0, "t_scale": 1000.0, "axes_dims": list(AXES_DIM),
        "axes_lens": [256, 32, 32]}
WIDE = {**BASE, "dim": 1024, "n_heads": 8, "n_kv_heads": 8, "axes_dims": [32, 48, 48], "axes_lens": [256, 64, 64]}
"""The narrowest Z-Image ComfyUI and diffusers build alike: both embed the timestep through 1024 hidden units
into min(dim, 256) (ComfyUI: min(dim, 1024) into 256), which agree from 1024-wide tokens on."""
WIDE_AXES_DIM = (32, 48, 48)


def randomize(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter re-randomised (zero-initialised skips and the ``torch.empty`` pad tokens included).

    Norm weights stay near 1 so attention is far from uniform and the rotary positions matter; matrices wider
    than 32 inputs are scaled down with their width, so activations stay of the same size at every width.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            width = p.shape[-1] if p.ndim == 2 else 1
            p.copy_(1 + 0.1 * noise if "norm" in name else 0.2 * min(1.0, (32 / width) ** 0.5) * noise)
    return model.eval()


def tiny_transformer(seed: int = 0, sizes: dict = BASE) -> ZImageTransformer2DModel:
    """A randomised base Z-Image transformer of :data:`BASE` (or ``sizes``) sizes."""
    torch.manual_seed(seed)
    return randomize(ZImageTransformer2DModel(**sizes), seed + 1)


def _control_sizes(transformer: ZImageTransformer2DModel) -> dict:
    cfg = transformer.config
    return {"dim": cfg.dim, "n_refiner_layers": cfg.n_refiner_layers, "n_heads": cfg.n_heads,
            "n_kv_heads": cfg.n_kv_heads}


def tiny_controlnet(version: str, transformer: ZImageTransformer2DModel, seed: int = 10) -> ZImageControlNetModel:
    """A randomised diffusers ControlNet of ``version``'s shape, sharing ``transformer``'s base modules."""
    torch.manual_seed(seed)
    sizes = _control_sizes(transformer)
    net = ZImageControlNetModel(**VERSIONS[version], control_refiner_layers_places=[0, 1], **sizes)
    return ZImageControlNetModel.from_transformer(randomize(net, seed + 1), transformer)


def inputs(version: str, seed: int = 3, batch: int = 2, height: int = 8, width: int = 12, tokens: int = 5):
    """Latent, time in 0..1, caption features and control context (4 x 6 tokens: the image run is padded)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, LATENT_CHANNELS, height, width, generator=gen)
    caption = torch.randn(batch, tokens, CAPTION_DIM, generator=gen)
    channels = VERSIONS[version]["control_in_dim"]
    context = torch.randn(batch, channels, height, width, generator=gen)
    t = torch.linspace(0.3, 0.8, batch)
    return x, t, caption, context


def diffusers_skips(reference: ZImageControlNetModel, x, t, caption, context) -> Dict[int, torch.Tensor]:
    """``reference``'s ``controlnet_block_samples`` (scale 1), keyed by main layer."""
    with torch.no_grad():
        return reference([xi[:, None] for xi in x], t, list(caption), [ci[:, None] for ci in context], 1.0)


def diffusers_denoise(transformer: ZImageTransformer2DModel, x, t, caption, samples=None) -> torch.Tensor:
    """The base transformer's output ``(B, C, H, W)``, given ``controlnet_block_samples`` or not."""
    with torch.no_grad():
        out = transformer([xi[:, None] for xi in x], t, list(caption), return_dict=False,
                          controlnet_block_samples=samples)[0]
    return torch.stack([o[:, 0] for o in out])


def _pad_run(tokens: torch.Tensor, pad_token: torch.Tensor) -> torch.Tensor:
    """``(B, n, D)`` tokens followed by pad tokens up to a multiple of 32, as the base model pads."""
    missing = (-tokens.shape[1]) % 32
    return torch.cat((tokens, pad_token.reshape(1, 1, -1).expand(tokens.shape[0], missing, -1)), dim=1)


def base_stages(transformer: ZImageTransformer2DModel, x, t, caption):
    """The base model's tensors before its refiners, computed with diffusers' own modules.

    Returns:
        ``(x0, cap, adaln, grid)``: padded image tokens before the noise refiner, the refined padded caption
        tokens, the timestep embedding, and the token grid.
    """
    adaln = transformer.t_embedder(t * transformer.t_scale)
    b, c, h, w = x.shape
    patches = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, 4 * c)
    x0 = _pad_run(transformer.all_x_embedder["2-1"](patches), transformer.x_pad_token)
    cap = _pad_run(transformer.cap_embedder(caption), transformer.cap_pad_token)
    cap_ids, _ = position_ids(cap.shape[1], (h // 2, w // 2), x0.shape[1])
    freqs = transformer.rope_embedder(cap_ids.long())[None].expand(b, -1, -1)
    for layer in transformer.context_refiner:
        cap = layer(cap, None, freqs)
    return x0, cap, adaln, (h // 2, w // 2)


def ropes(caption_len: int, grid: Tuple[int, int], image_len: int):
    """Our rotary ``(cos, sin)`` of the caption run and of the image run."""
    cap_ids, img_ids = position_ids(caption_len, grid, image_len)
    return rope_frequencies(cap_ids, AXES_DIM, 256.0), rope_frequencies(img_ids, AXES_DIM, 256.0)


def our_skips(ours: ZImageControlNet, transformer: ZImageTransformer2DModel, x, t, caption, context
              ) -> Tuple[Tuple[torch.Tensor, ...], List[torch.Tensor]]:
    """Our refiner and main-stage skips, the base model's part run by diffusers' modules.

    The refiner skips are added to the base tokens after each noise-refiner block (the authors' reference);
    the unified sequence is ``[image | caption]`` as in diffusers.
    """
    with torch.no_grad():
        x0, cap, adaln, grid = base_stages(transformer, x, t, caption)
        cap_rope, img_rope = ropes(cap.shape[1], grid, x0.shape[1])
        c = ours.stream_start(ours.embed_hint(context), transformer.x_pad_token, x0.shape[1])
        c, refiner_skips = ours.refine(c, x0, img_rope, adaln)
        tokens = x0
        img_ids = position_ids(cap.shape[1], grid, x0.shape[1])[1]
        img_freqs = transformer.rope_embedder(img_ids.long())[None].expand(x.shape[0], -1, -1)
        for i, layer in enumerate(transformer.noise_refiner):
            tokens = layer(tokens, None, img_freqs, adaln)
            if i < len(refiner_skips):
                tokens = tokens + refiner_skips[i]
        unified = torch.cat((tokens, cap), dim=1)
        rope = tuple(torch.cat(pair) for pair in zip(img_rope, cap_rope))
        return refiner_skips, list(ours.layer_skips(c, unified, slice(0, x0.shape[1]), rope, adaln))


def as_samples(skips: Sequence[torch.Tensor], places: Sequence[int]) -> Dict[int, torch.Tensor]:
    """Main-stage skips as diffusers' ``controlnet_block_samples``."""
    return dict(zip(places, skips))


def comfy_z_image(transformer):
    """ComfyUI's own Z-Image MODEL at :data:`WIDE` sizes holding ``transformer``'s weights (ComfyUI's key map)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import comfy.utils
    config = {"image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": WIDE["dim"],
              "n_layers": WIDE["n_layers"], "n_refiner_layers": 2, "n_heads": WIDE["n_heads"],
              "n_kv_heads": WIDE["n_heads"], "qk_norm": True, "cap_feat_dim": WIDE["cap_feat_dim"],
              "axes_dims": list(WIDE_AXES_DIM), "axes_lens": WIDE["axes_lens"],
              "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 1, "z_image_modulation": True,
              "time_scale": 1000.0, "pad_tokens_multiple": 32}
    model = comfy.supported_models.ZImage(config).get_model({})
    key_map = comfy.utils.z_image_to_diffusers({"n_layers": WIDE["n_layers"], "dim": WIDE["dim"]})
    sd = {}
    for name, tensor in transformer.state_dict().items():
        target = key_map.get(name)
        if isinstance(target, tuple):
            sd.setdefault(target[0], []).append((target[1][1], tensor))
        elif target is not None:
            sd[target] = tensor
    sd = {k: torch.cat([t for _, t in sorted(v, key=lambda p: p[0])]) if isinstance(v, list) else v
          for k, v in sd.items()}
    missing, unexpected = model.diffusion_model.load_state_dict(sd, strict=False)
    assert missing == ["norm_final.weight"] and not unexpected  # NextDiT's norm_final is never used by Z-Image
    return comfy.model_patcher.ModelPatcher(model.float(), load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())
