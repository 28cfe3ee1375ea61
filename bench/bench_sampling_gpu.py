"""Seconds per sampling step on a GPU: no control, ComfyUI's native ControlNet and ControlNet Refine, with
full-size random SD1.5 (UNet 860M + ControlNet 361M) and SDXL (UNet 2.6B + ControlNet 1.25B) weights, at
512x512 and 1024x1024, cfg 7, euler, in ComfyUI's UNet dtype on ComfyUI's torch device.

The same configurations as bench/bench_sampling.py (its CPU counterpart), interleaved round after round
after one warm-up round; step times come from the sampler's callback after a device synchronise; memory
is the peak of torch's allocator during a run. Prints one table of ratios to no control and to native.

    CNR_USE_GPU=1 python bench/bench_sampling_gpu.py [--families sd15 sdxl] [--sizes 512 1024] [--steps 6]
"""
import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
from bench_sampling import SD15_UNET, configurations  # noqa: E402

SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 320,
    "num_res_blocks": 2, "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_heads": -1,
    "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
}
FAMILIES = {"sd15": SD15_UNET, "sdxl": SDXL_UNET}


def boot():
    """ComfyUI on its own device choice (fails fast without CUDA), the pack loaded."""
    if not torch.cuda.is_available() and os.environ.get("CNR_ALLOW_CPU") != "1":
        raise SystemExit("bench_sampling_gpu: torch sees no CUDA device; run on a machine with an NVIDIA GPU and CUDA "
                         "torch (CNR_ALLOW_CPU=1 for a tiny dry run on the CPU)")
    if torch.cuda.is_available():
        os.environ["CNR_USE_GPU"] = "1"
    import comfy_host
    return comfy_host.boot()


def random_models(family: str, tmp: Path, width: int = 0):
    """(MODEL, native ControlNet, CNR ControlNet, params) with seeded random weights built on the GPU. ``width``
    overrides model_channels (a dry run's tiny model)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import folder_paths
    from safetensors.torch import save_file
    nodes = boot()
    cfg = dict(FAMILIES[family], **({"model_channels": width} if width else {}))
    device = mm.get_torch_device()
    config = (comfy.supported_models.SDXL if family == "sdxl" else comfy.supported_models.SD15)(dict(cfg))
    dtype = mm.unet_dtype()
    config.set_inference_dtype(dtype, None)
    base = config.get_model({}, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in base.diffusion_model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32).mul_(0.02))
    model = comfy.model_patcher.ModelPatcher(base, load_device=device, offload_device=mm.unet_offload_device())
    cn_cfg = {k: v for k, v in cfg.items() if k not in ("out_channels", "transformer_depth_output")}
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=dtype, device=device, **cn_cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, device=device, dtype=torch.float32).mul_(0.02))
    folder = tmp / "controlnet"
    folder.mkdir(exist_ok=True)
    name = f"{family}_random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / name))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    native = comfy.controlnet.ControlNet(net, load_device=device, manual_cast_dtype=None)
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(name)[0]
    params = (sum(p.numel() for p in base.diffusion_model.parameters()), sum(p.numel() for p in net.parameters()))
    return nodes, model, native, ours, params, base


def conditioning(family: str, size: int, gen: torch.Generator):
    if family == "sdxl":
        def cond():
            return [[torch.randn(1, 77, 2048, generator=gen),
                     {"pooled_output": torch.randn(1, 1280, generator=gen), "width": size, "height": size,
                      "crop_w": 0, "crop_h": 0, "target_width": size, "target_height": size}]]
    else:
        def cond():
            return [[torch.randn(1, 77, 768, generator=gen), {}]]
    return cond(), cond()


def run(model, pos, neg, steps: int, size: int, seed: int = 0):
    import comfy.sample
    latent = torch.zeros(1, 4, size // 8, size // 8)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    stamps = []

    def callback(*args):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        stamps.append(time_now())
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    stamps.append(time_now())
    out = comfy.sample.sample(model, noise, steps, 7.0, "euler", "normal", pos, neg, latent, seed=seed,
                              disable_pbar=True, callback=callback)
    assert torch.isfinite(out).all(), "non-finite samples"
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return [b - a for a, b in zip(stamps, stamps[1:])], peak


def time_now() -> float:
    import time
    return time.perf_counter()


def bench(family: str, size: int, steps: int, rounds: int, width: int = 0):
    import comfy.model_management as mm
    import comfy.samplers
    with tempfile.TemporaryDirectory() as tmp:
        nodes, model, native, ours, params, base = random_models(family, Path(tmp), width)
        sigmas = comfy.samplers.calculate_sigmas_scheduler(base, "normal", steps) \
            if hasattr(comfy.samplers, "calculate_sigmas_scheduler") else \
            comfy.samplers.calculate_sigmas(base.model_sampling, "normal", steps)
        gen = torch.Generator().manual_seed(1)
        pos, neg = conditioning(family, size, gen)
        hint = torch.rand(1, size, size, 3, generator=gen)
        configs = configurations(nodes, model, native, ours, pos, neg, hint, sigmas)
        times = {name: [] for name in configs}
        outside = {name: [] for name in configs}
        peaks = {name: 0.0 for name in configs}
        for round_index in range(rounds + 1):
            for name, (m, p, n, window_end) in configs.items():
                step_times, peak = run(m, p, n, steps, size)
                if round_index == 0:
                    continue
                peaks[name] = max(peaks[name], peak)
                for i, t in enumerate(step_times):
                    active = window_end is None or (i + 1) / steps <= window_end
                    (times if active else outside)[name].append(t)
        del configs, model, native, ours, base
        mm.unload_all_models()
        mm.soft_empty_cache()
    return params, times, outside, peaks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=["sd15", "sdxl"], choices=list(FAMILIES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[512, 1024])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--width", type=int, default=0, help="model_channels override (a tiny dry run)")
    args = parser.parse_args()
    boot()
    import comfy.model_management as mm
    device = mm.get_torch_device()
    name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "cpu"
    print(f"device {device} ({name}), UNet dtype {mm.unet_dtype()}, torch {torch.__version__}, cfg 7, euler, "
          f"{args.steps} steps x {args.rounds} rounds (+1 warm-up), median seconds per step", flush=True)
    print(f"{'model':<6}{'size':>6}  {'configuration':<34}{'s/step':>8}{'x no control':>14}{'x native':>10}"
          f"{'peak MiB':>10}", flush=True)
    for family in args.families:
        for size in args.sizes:
            (unet_n, cn_n), times, outside, peaks = bench(family, size, args.steps, args.rounds, args.width)
            base = statistics.median(times["no control"])
            native_s = statistics.median(times["ComfyUI native ControlNet"])
            for config in times:
                for label, samples in ((config, times[config]), ("  steps outside the window", outside[config])):
                    if samples:
                        med = statistics.median(samples)
                        peak = f"{peaks[config]:>10.0f}" if label == config else ""
                        print(f"{family:<6}{size:>6}  {label:<34}{med:>8.4f}{med / base:>14.3f}{med / native_s:>10.3f}"
                              f"{peak}", flush=True)
            print(f"{family:<6}{size:>6}  (UNet {unet_n / 1e6:.0f}M, ControlNet {cn_n / 1e6:.0f}M params)", flush=True)


if __name__ == "__main__":
    main()
