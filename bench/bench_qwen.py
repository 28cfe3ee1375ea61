"""Seconds per sampling step on Qwen-Image: no control, ComfyUI's own Qwen-Image ControlNet, and ControlNet Refine.

A Qwen-Image base model at full width (3072, 24 heads of 128, 3584-wide text) but reduced depth, and an
InstantX-size Union ControlNet (5 blocks) at the same width, random weights, one small latent, cfg 1 (one model
call per step), euler. Both ControlNet paths get the same VAE for the hint (ComfyUI's own Wan-2.1 VAE class at a
tiny width, random), encoded once. Configurations run interleaved, round after round, after one warm-up round;
per-step times come from the sampler's step callback, the first step of each run (which also encodes the hint)
left out. Needs a current ComfyUI (``COMFYUI_PATH``). Not a test: only ratios measured side by side mean anything.

Weights are bfloat16 by default, as Qwen-Image is run: the ControlNet alone is 1.7 B parameters at full width,
held twice (ComfyUI's copy and ours), so a bfloat16 run needs some 9 GB and a float32 one some 17 GB.
``--width 256 --heads 2`` gives a quick smoke run.

    COMFYUI_PATH=... python bench/bench_qwen.py [--width 3072] [--heads 24] [--blocks 2] [--cn-blocks 5]
        [--latent 16] [--text-tokens 64] [--steps 4] [--rounds 2] [--dtype bfloat16]
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
from _common import DTYPE_FLAGS, cnr_controlnet, native_and_cnr_step_times, print_step_table, randomized  # noqa: E402

TEXT_DIM = 3584  # Qwen2.5-VL's hidden states, what Qwen-Image reads
CHANNELS = 16  # the Wan-2.1 latent


def _params(width: int, heads: int, blocks: int) -> dict:
    head = width // heads
    side = (head - head // 8) // 4 * 2  # Qwen-Image's 16 / 56 / 56 split at 128-wide heads
    return {"patch_size": 2, "in_channels": 4 * CHANNELS, "out_channels": CHANNELS, "num_layers": blocks,
            "attention_head_dim": head, "num_attention_heads": heads, "joint_attention_dim": TEXT_DIM,
            "axes_dims_rope": (head - 2 * side, side, side)}


def _wan_vae(seed: int):
    """ComfyUI's Wan-2.1 VAE class at 8 base channels, random: only the hint's encoding uses it, once per run."""
    import comfy.ldm.wan.vae
    import comfy.sd
    net = comfy.ldm.wan.vae.WanVAE(dim=8, z_dim=CHANNELS, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                                   temperal_downsample=[False, True, True], dropout=0.0)
    gen = torch.Generator().manual_seed(seed)
    return comfy.sd.VAE(sd={k: 0.1 * torch.randn(v.shape, generator=gen) + (1.0 if k.endswith("gamma") else 0.0)
                            for k, v in net.state_dict().items()})


def build(args, folder: Path):
    nodes = comfy_host.boot()
    import comfy.cli_args
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.ldm.qwen_image.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    # The loaders (ComfyUI's and ours) then pick this dtype, as they would on a GPU that computes in it.
    setattr(comfy.cli_args.args, DTYPE_FLAGS[args.dtype], True)
    dtype = mm.unet_dtype()
    config = comfy.supported_models.QwenImage({**_params(args.width, args.heads, args.blocks),
                                               "image_model": "qwen_image"})
    config.set_inference_dtype(dtype, None)
    base = config.get_model({})
    randomized(base.diffusion_model, 0)
    model = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
    net = comfy.ldm.qwen_image.controlnet.QwenImageControlNetModel(
        extra_condition_channels=0, operations=comfy.ops.disable_weight_init, dtype=dtype, device="cpu",
        **_params(args.width, args.heads, args.cn_blocks))
    randomized(net, 1)
    # As ComfyUI's load_controlnet_qwen_instantx wraps it.
    native = comfy.controlnet.ControlNet(net, compression_ratio=1, latent_format=comfy.latent_formats.Wan21(),
                                         load_device=mm.get_torch_device(), manual_cast_dtype=None, extra_conds=[])
    vae = _wan_vae(2)
    ours = cnr_controlnet(nodes, net.state_dict(), folder, "qwen_bench.safetensors", vae)
    n_params = (sum(p.numel() for p in base.diffusion_model.parameters()), sum(p.numel() for p in net.parameters()))
    return nodes, model, native, ours, vae, n_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    for name, default in (("width", 3072), ("heads", 24), ("blocks", 2), ("cn-blocks", 5), ("latent", 16),
                          ("text-tokens", 64), ("steps", 4), ("rounds", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        nodes, model, native, ours, vae, (n_base, n_net) = build(args, Path(tmp))
        gen = torch.Generator().manual_seed(1)
        pos = [[torch.randn(1, args.text_tokens, TEXT_DIM, generator=gen), {}]]
        neg = [[torch.randn(1, args.text_tokens, TEXT_DIM, generator=gen), {}]]
        latent = torch.zeros(1, CHANNELS, 1, args.latent, args.latent)
        hint = torch.rand(1, args.latent * 8, args.latent * 8, 3, generator=gen)
        times = native_and_cnr_step_times(nodes, model, native, ours, vae, (pos, neg), latent, hint,
                                          "ComfyUI Qwen-Image ControlNet", args.steps, args.rounds)
    print(f"Qwen-Image base {n_base / 1e6:.0f}M ({args.blocks} blocks) + InstantX ControlNet {n_net / 1e6:.0f}M "
          f"({args.cn_blocks} blocks) params, width {args.width}, random; latent {args.latent}x{args.latent}, "
          f"{args.text_tokens} text tokens, {args.dtype}, cfg 1, euler, {args.steps} steps x {args.rounds} rounds "
          f"(+1 warm-up, first step of each run left out), torch threads {torch.get_num_threads()}, median s per "
          f"step; {time.perf_counter() - started:.0f} s in all")
    print_step_table(times, "no control", "ComfyUI Qwen-Image ControlNet")
    base = statistics.median(times["no control"])
    native_s = statistics.median(times["ComfyUI Qwen-Image ControlNet"])
    ours_s = statistics.median(times["CNR balanced"])
    print(f"overhead over no control: CNR {ours_s - base:.3f} s vs ComfyUI {native_s - base:.3f} s per step, ratio "
          f"{(ours_s - base) / (native_s - base):.3f}; target: CNR's <= ComfyUI's")


if __name__ == "__main__":
    main()
