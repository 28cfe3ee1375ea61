"""Seconds per sampling step on Flux: no control, ComfyUI's own Flux ControlNet, and ControlNet Refine.

A Flux base model at full width (3072, 24 heads) but reduced depth, and an InstantX-class latent-hint
ControlNet (5 double, 10 single blocks) at the same width, random weights, one small latent, 256 text
tokens (ComfyUI's minimum for Flux's T5), cfg 1
(Flux dev: one model call per step), euler. Both ControlNet paths get the same 16-channel VAE (a random
TAESD) for the hint, encoded once. Configurations run interleaved, round after round, after one
warm-up round; per-step times come from the sampler's step callback. Needs a current ComfyUI
(``COMFYUI_PATH``). Not a test: only ratios measured side by side mean anything.

Weights are bfloat16 by default, as Flux is run: at full width the ControlNet alone is 3.3 B parameters,
held twice (ComfyUI's copy and ours), so a float32 run needs some 32 GB and a bfloat16 one some 16 GB.
``--width 256 --heads 2`` and fewer blocks give a quick smoke run.

    COMFYUI_PATH=... python bench/bench_flux.py [--width 3072] [--heads 24] [--double 2] [--single 4]
        [--cn-double 5] [--cn-single 10] [--latent 32] [--steps 4] [--rounds 2] [--dtype bfloat16]
"""
import argparse
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
import comfy_host  # noqa: E402
from _common import (DTYPE_FLAGS, cnr_controlnet, native_and_cnr_step_times, print_step_table,  # noqa: E402
                     random_taesd_vae, randomized)

TEXT_DIM, POOLED_DIM = 4096, 768
TEXT_TOKENS = 256  # ComfyUI pads Flux's T5 tokens to at least 256


def _params(width: int, heads: int, double: int, single: int) -> dict:
    head = width // heads
    side = (head - head // 8) // 4 * 2
    return {"in_channels": 16, "out_channels": 16, "vec_in_dim": POOLED_DIM, "context_in_dim": TEXT_DIM,
            "hidden_size": width, "mlp_ratio": 4.0, "num_heads": heads, "depth": double,
            "depth_single_blocks": single, "axes_dim": [head - 2 * side, side, side], "theta": 10000,
            "patch_size": 2, "qkv_bias": True, "guidance_embed": True}


def build(args, folder: Path):
    nodes = comfy_host.boot()
    import comfy.cli_args
    import comfy.controlnet
    import comfy.latent_formats
    import comfy.ldm.flux.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.ops
    import comfy.supported_models

    # The loaders (ComfyUI's and ours) then pick this dtype, as they would on a GPU that computes in it.
    setattr(comfy.cli_args.args, DTYPE_FLAGS[args.dtype], True)
    dtype = mm.unet_dtype()
    config = comfy.supported_models.Flux({**_params(args.width, args.heads, args.double, args.single),
                                          "image_model": "flux"})
    config.set_inference_dtype(dtype, None)
    base = config.get_model({})
    randomized(base.diffusion_model, 0)
    model = comfy.model_patcher.ModelPatcher(base, load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
    net = comfy.ldm.flux.controlnet.ControlNetFlux(
        latent_input=True, control_latent_channels=16, operations=comfy.ops.disable_weight_init, dtype=dtype,
        device="cpu", **_params(args.width, args.heads, args.cn_double, args.cn_single))
    randomized(net, 1)
    native = comfy.controlnet.ControlNet(net, compression_ratio=1, latent_format=comfy.latent_formats.Flux(),
                                         load_device=mm.get_torch_device(), manual_cast_dtype=None,
                                         extra_conds=["y", "guidance"])
    vae = random_taesd_vae(2)
    ours = cnr_controlnet(nodes, net.state_dict(), folder, "flux_bench.safetensors", vae)
    n_params = (sum(p.numel() for p in base.diffusion_model.parameters()), sum(p.numel() for p in net.parameters()))
    return nodes, model, native, ours, vae, n_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    for name, default in (("width", 3072), ("heads", 24), ("double", 2), ("single", 4), ("cn-double", 5),
                          ("cn-single", 10), ("latent", 32), ("steps", 4), ("rounds", 2)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes, model, native, ours, vae, (n_base, n_net) = build(args, Path(tmp))
        gen = torch.Generator().manual_seed(1)
        pos = [[torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=gen),
                {"pooled_output": torch.randn(1, POOLED_DIM, generator=gen), "guidance": 3.5}]]
        neg = [[torch.randn(1, TEXT_TOKENS, TEXT_DIM, generator=gen), {"pooled_output": torch.zeros(1, POOLED_DIM)}]]
        latent = torch.zeros(1, 16, args.latent, args.latent)
        hint = torch.rand(1, args.latent * 8, args.latent * 8, 3, generator=gen)
        times = native_and_cnr_step_times(nodes, model, native, ours, vae, (pos, neg), latent, hint,
                                          "ComfyUI Flux ControlNet", args.steps, args.rounds)
    print(f"Flux base {n_base / 1e6:.0f}M ({args.double} double, {args.single} single blocks) + ControlNet "
          f"{n_net / 1e6:.0f}M ({args.cn_double} + {args.cn_single}) params, width {args.width}, random; latent "
          f"{args.latent}x{args.latent}, {args.dtype}, cfg 1, euler, {args.steps} steps x {args.rounds} rounds (+1 "
          f"warm-up, first step of each run left out), torch threads {torch.get_num_threads()}, median s per step")
    print_step_table(times, "no control", "ComfyUI Flux ControlNet")
    print("target: CNR balanced overhead over no control <= ComfyUI's")


if __name__ == "__main__":
    main()
