"""Seconds per sampling step with a T2I-Adapter: no control, ComfyUI's own T2I path, and ControlNet Refine.

Full-size SD1.5-shaped random UNet (860M) and full SD1.5 T2I-Adapter (77M, TencentARC layout, written
at run time), 256x256 (32x32 latent), cfg 7 (batch 2 per model call), euler, CPU, one process.
Configurations run interleaved, round after round, after one warm-up round; per-step times come
from the sampler's step callback. Both paths compute the adapter's features once per sampling, so
the per-step overhead over no control is what adding four feature maps to the UNet costs. Not a
test: timings on a shared machine are noisy, so only ratios measured side by side mean anything.
Because that overhead is far below the noise of a CPU step, a second table times each path's own
work per model call with the UNet left out: ComfyUI's ``T2IAdapter.get_control`` against our
wrapper with a no-op model.

    python bench/bench_t2i.py [--steps 4] [--rounds 2]
"""
import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
from bench_sampling import PeakRss, random_sd15_unet, run  # noqa: E402

ADAPTER_CHANNELS = [320, 640, 1280, 1280]


def build(tmp: Path):
    import comfy_host
    nodes = comfy_host.boot()
    import comfy.controlnet
    import comfy.t2i_adapter.adapter
    import folder_paths
    from safetensors.torch import save_file

    model, unet = random_sd15_unet()
    adapter = comfy.t2i_adapter.adapter.Adapter(channels=ADAPTER_CHANNELS, nums_rb=2, cin=3 * 8 * 8, ksize=1, sk=True,
                                                use_conv=False, xl=False)
    with torch.no_grad():
        for p in adapter.parameters():
            p.normal_(0.0, 0.02)
    n_params = sum(p.numel() for p in adapter.parameters())
    folder = tmp / "t2i_adapter"
    folder.mkdir()
    path = folder / "t2iadapter_sd15_random.safetensors"
    save_file({k: v.half().contiguous() for k, v in adapter.state_dict().items()}, str(path))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    native = comfy.controlnet.load_controlnet(str(path))
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(path.name)[0]
    return nodes, model, native, ours, n_params, unet


def configurations(nodes, model, native, ours, pos, neg, hint):
    npos, nneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, hint, 1.0, 0.0, 1.0)[:2]
    patched = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]().apply(
        model, ours, hint, 1.0, 0.0, 1.0, "balanced", "crop", "model sigma (ComfyUI)")[0]
    return {
        "no control": (model, pos, neg),
        "ComfyUI native T2I-Adapter": (model, npos, nneg),
        "CNR T2I-Adapter": (patched, pos, neg),
    }


def per_call_ms(nodes, patched, npos, calls: int = 200):
    """Median milliseconds of each path's own work per model call (batch 2, 32x32 latent), UNet excluded."""
    import time
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    sigma = torch.full((2,), 7.0)
    native = npos[0][1]["control"]
    native.cond_hint = None  # features are computed on the first call, as in sampling
    cond = {"c_crossattn": torch.zeros(2, 77, 768)}
    wrapper = patched.model_options["model_function_wrapper"]
    args = {"input": x, "timestep": sigma, "c": dict(cond, transformer_options={}), "cond_or_uncond": [0, 1]}

    def native_call():
        try:
            native.get_control(x, sigma, cond, 1, {})
        except TypeError:  # the 2024 host has no transformer_options argument
            native.get_control(x, sigma, cond, 1)

    def ours_call():
        wrapper(lambda inp, t, **c: inp, args)

    paths = {"ComfyUI native T2I-Adapter": native_call, "CNR T2I-Adapter": ours_call}
    samples = {name: [] for name in paths}
    for call in paths.values():
        call()
    for _ in range(calls):  # interleaved, so that load from other processes hits both alike
        for name, call in paths.items():
            start = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes, model, native, ours, n_params, unet = build(Path(tmp))
        gen = torch.Generator().manual_seed(1)
        pos = [[torch.randn(1, 77, 768, generator=gen), {}]]
        neg = [[torch.randn(1, 77, 768, generator=gen), {}]]
        hint = torch.rand(1, 256, 256, 3, generator=gen)
        configs = configurations(nodes, model, native, ours, pos, neg, hint)
        overhead = per_call_ms(nodes, configs["CNR T2I-Adapter"][0], configs["ComfyUI native T2I-Adapter"][1])
        firsts = {name: [] for name in configs}  # the first step also computes the adapter's features
        times = {name: [] for name in configs}
        peaks = {name: 0.0 for name in configs}
        for round_index in range(args.rounds + 1):
            for name, (m, p, n) in configs.items():
                with PeakRss() as rss:
                    step_times = run(m, p, n, args.steps)
                if round_index == 0:
                    continue  # warm-up
                peaks[name] = max(peaks[name], rss.growth)
                firsts[name].append(step_times[0])
                times[name] += step_times[1:]
    print(f"UNet {sum(p.numel() for p in unet.diffusion_model.parameters()) / 1e6:.0f}M + T2I-Adapter "
          f"{n_params / 1e6:.0f}M params (random), 256x256, cfg 7, euler, {args.steps} steps x {args.rounds} rounds "
          f"(+1 warm-up), torch threads {torch.get_num_threads()}, median seconds per step")
    base = statistics.median(times["no control"])
    native_s = statistics.median(times["ComfyUI native T2I-Adapter"])
    print(f"{'configuration':<30}{'first step':>11}{'s/step':>8}{'x no control':>14}{'x native':>10}"
          f"{'peak RSS +MiB':>15}")
    for name in configs:
        med = statistics.median(times[name])
        print(f"{name:<30}{statistics.median(firsts[name]):>11.3f}{med:>8.3f}{med / base:>14.3f}"
              f"{med / native_s:>10.3f}{peaks[name]:>15.0f}")
    print(f"{'own work per model call, UNet excluded':<40}{'ms':>8}")
    for name, ms in overhead.items():
        print(f"{name:<40}{ms:>8.2f}")
    print("target: CNR T2I-Adapter s/step <= ComfyUI native (steps after the first)")


if __name__ == "__main__":
    main()
