"""Seconds per sampling step on Z-Image: no control, and a Z-Image Fun ControlNet through ControlNet Refine, beside
the control layers' own forward.

ComfyUI's Z-Image model (NextDiT) at full width (3840, 30 heads of 128, rotary axes 32/48/48) but reduced depth,
and a Fun ControlNet of the 2.1 shape (control refiner, 33-channel context) with ``--control-layers`` layers
placed after the first main layers, random weights, one latent, 64 caption tokens, cfg 1, euler. On ComfyUI
0.3.75 the pack runs the model's submodules itself (no per-layer hooks there), so the overhead over no control
should be the control layers' own work: target ``overhead <= control forward x 1.05``. Configurations run
interleaved, round after round, after one warm-up round; per-step times come from the sampler's step callback.
Needs a current ComfyUI (``COMFYUI_PATH``). Not a test: only ratios measured side by side mean anything.

At full width a base of 4 main layers and 2 + 2 refiners is some 1.4 B parameters and the ControlNet (3
layers, 2 refiner blocks) 0.9 B; bfloat16 halves the float32 32 GB or so. ``--width 256 --heads 2`` gives a
quick smoke run.

    COMFYUI_PATH=... python bench/bench_z_image.py [--width 3840] [--heads 30] [--layers 4]
        [--control-layers 3] [--latent 64] [--steps 4] [--rounds 2] [--dtype bfloat16]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
import comfy_host  # noqa: E402

CAPTION_DIM, CAPTION_TOKENS = 2560, 64
DTYPE_FLAGS = {"bfloat16": "bf16_unet", "float16": "fp16_unet", "float32": "fp32_unet"}


def _axes(head: int):
    side = head * 3 // 8 // 2 * 2
    return [head - 2 * side, side, side]


def _random(module, seed: int):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(1 + 0.02 * noise if "norm" in name else noise * 0.02)
    return module.eval()


def _control_weights(width: int, heads: int, layers: int, dtype) -> dict:
    """A 2.1-shaped Fun ControlNet state dict in alibaba-pai's names (built with the core's own module)."""
    from cnr_pack.controlnet_core.families.z_image.model import ZImageControlNet, ZImageControlNetConfig
    config = ZImageControlNetConfig(hidden_size=width, num_heads=heads, ffn_hidden=int(width / 3 * 8),
                                    places=tuple(range(layers)), axes_dim=tuple(_axes(width // heads)))
    return {k: v.to(dtype).contiguous() for k, v in _random(ZImageControlNet(config), 1).state_dict().items()}


def build(args, folder: Path):
    nodes = comfy_host.boot()
    comfy_host.import_pack()
    import comfy.cli_args
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.sd
    import comfy.supported_models
    import comfy.taesd.taesd
    import folder_paths
    from safetensors.torch import save_file

    setattr(comfy.cli_args.args, DTYPE_FLAGS[args.dtype], True)
    dtype = mm.unet_dtype()
    config = comfy.supported_models.ZImage({
        "image_model": "lumina2", "patch_size": 2, "in_channels": 16, "dim": args.width, "n_layers": args.layers,
        "n_refiner_layers": 2, "n_heads": args.heads, "n_kv_heads": args.heads, "qk_norm": True,
        "cap_feat_dim": CAPTION_DIM, "axes_dims": _axes(args.width // args.heads), "axes_lens": [1536, 512, 512],
        "rope_theta": 256.0, "ffn_dim_multiplier": 8.0 / 3.0, "multiple_of": 1, "z_image_modulation": True,
        "time_scale": 1000.0, "pad_tokens_multiple": 32})
    config.set_inference_dtype(dtype, None)
    base = config.get_model({})
    _random(base.diffusion_model, 0)
    model = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
    save_file(_control_weights(args.width, args.heads, args.control_layers, dtype), str(folder / "zimage.safetensors"))
    folder_paths.add_model_folder_path("model_patches", str(folder))
    gen = torch.Generator().manual_seed(2)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=16).state_dict()
    vae = comfy.sd.VAE(sd={k: v if v.ndim == 0 else torch.randn(v.shape, generator=gen) * 0.05
                           for k, v in taesd.items()})
    loader = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]
    loader.INPUT_TYPES()
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_HintVAE"]().attach(loader().load("zimage.safetensors")[0], vae)[0]
    object.__setattr__(ours.net, "config", type(ours.net.config)(**{**ours.net.config.__dict__,
                                                                    "places": tuple(range(args.control_layers))}))
    return nodes, model, ours


def run(model, pos, neg, latent, steps):
    import comfy.sample
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    stamps = [time.perf_counter()]
    out = comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", pos, neg, latent, seed=0,
                              disable_pbar=True, callback=lambda *a: stamps.append(time.perf_counter()))
    assert torch.isfinite(out).all()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def control_forward_seconds(net, args, device, repeats: int) -> float:
    """Median time of the control's two stages alone on tensors of one step's shapes."""
    from cnr_pack.controlnet_core.families.z_image.model import position_ids
    from cnr_pack.controlnet_core.layers.rotary import rope_frequencies
    dtype = next(net.parameters()).dtype
    grid = (args.latent // 2, args.latent // 2)
    n_img = -(-grid[0] * grid[1] // 32) * 32
    cap_ids, img_ids = position_ids(CAPTION_TOKENS, grid, n_img, device=device)
    axes = net.config.axes_dim
    img_rope = rope_frequencies(img_ids, axes, net.config.theta)
    rope = rope_frequencies(torch.cat((cap_ids, img_ids)), axes, net.config.theta)
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randn(1, n_img, args.width, generator=gen).to(device, dtype)
    unified = torch.randn(1, CAPTION_TOKENS + n_img, args.width, generator=gen).to(device, dtype)
    adaln = torch.randn(1, net.config.adaln_dim, generator=gen).to(device, dtype)
    hint = torch.randn(1, net.config.hint_channels, args.latent, args.latent, generator=gen).to(device, dtype)
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            c = net.stream_start(net.embed_hint(hint), x0[:1, -1], n_img)
            c, _ = net.refine(c, x0, img_rope, adaln)
            list(net.layer_skips(c, unified, slice(CAPTION_TOKENS, CAPTION_TOKENS + n_img), rope, adaln))
            times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    for name, default in (("width", 3840), ("heads", 30), ("layers", 4), ("control-layers", 3), ("latent", 64),
                          ("steps", 4), ("rounds", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes, model, ours = build(args, Path(tmp))
        gen = torch.Generator().manual_seed(1)
        pos = [[torch.randn(1, CAPTION_TOKENS, CAPTION_DIM, generator=gen), {}]]
        neg = [[torch.randn(1, CAPTION_TOKENS, CAPTION_DIM, generator=gen), {}]]
        latent = torch.zeros(1, 16, args.latent, args.latent)
        hint = torch.rand(1, args.latent * 8, args.latent * 8, 3, generator=gen)
        apply = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]()
        patched = apply.apply(model, ours, hint, 1.0, 0.0, 1.0, "balanced", "crop", "executed steps (diffusers)")[0]
        configs = {"no control": model, "CNR Z-Image Fun": patched}
        times = {name: [] for name in configs}
        for round_index in range(args.rounds + 1):
            for name, m in configs.items():
                step_times = run(m, pos, neg, latent, args.steps)
                if round_index:
                    times[name] += step_times[1:]  # the first step also encodes the hint
        device = next(ours.net.parameters()).device
        alone = control_forward_seconds(ours.net, args, device, args.rounds * args.steps)
    base, with_control = statistics.median(times["no control"]), statistics.median(times["CNR Z-Image Fun"])
    print(f"Z-Image base width {args.width} ({args.layers} main layers), Fun ControlNet 2.1-shaped with "
          f"{args.control_layers} control layers, random; latent {args.latent}x{args.latent}, {args.dtype}, cfg 1, "
          f"euler, {args.steps} steps x {args.rounds} rounds (+1 warm-up), torch threads {torch.get_num_threads()}")
    print(f"no control {base:.3f} s/step; with control {with_control:.3f} s/step; control layers alone "
          f"{alone:.3f} s (on {device}); overhead / control forward = {(with_control - base) / alone:.3f} "
          "(target <= 1.05)")


if __name__ == "__main__":
    main()
