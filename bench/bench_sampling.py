"""Seconds per sampling step: no control, ComfyUI's native ControlNet, and ControlNet Refine.

Full-size SD1.5-shaped random UNet (860M) and ControlNet (361M), 256x256 (32x32 latent), cfg 7
(batch 2 per model call), euler, CPU, one process. Configurations run interleaved, round after
round, after one warm-up round; per-step times come from the sampler's step callback. Memory is
the peak RSS growth during a run, polled every 5 ms. Not a test: timings on a shared machine are
noisy, so only ratios measured side by side mean anything.

    python bench/bench_sampling.py [--steps 6] [--rounds 3]
"""
import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
from _common import current_rss_mib  # noqa: E402

SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": 2,
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8, "num_head_channels": -1,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
}


class PeakRss:
    """Highest RSS growth over the start value while the block runs."""

    def __enter__(self):
        self.start = current_rss_mib()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, current_rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.growth = max(self.peak, current_rss_mib()) - self.start


def random_sd15_unet():
    """A full-size SD1.5-shaped UNet in ComfyUI's classes with seeded random weights: (ModelPatcher, BaseModel)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    torch.manual_seed(0)
    unet = comfy.supported_models.SD15(dict(SD15_UNET)).get_model({})
    with torch.no_grad():
        for p in unet.diffusion_model.parameters():
            p.normal_(0.0, 0.02)
    model = comfy.model_patcher.ModelPatcher(unet, load_device=mm.get_torch_device(),
                                             offload_device=mm.unet_offload_device())
    return model, unet


def build(tmp: Path):
    import comfy_host
    nodes = comfy_host.boot()
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models
    import folder_paths
    from safetensors.torch import save_file

    model, unet = random_sd15_unet()
    cfg = {k: v for k, v in SD15_UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    native_net = comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="cpu", **cfg)
    with torch.no_grad():
        for p in native_net.parameters():
            p.normal_(0.0, 0.02)
    n_params = sum(p.numel() for p in native_net.parameters())
    (tmp / "controlnet").mkdir()
    save_file({k: v.half().contiguous() for k, v in native_net.state_dict().items()},
              str(tmp / "controlnet" / "sd15_random.safetensors"))
    native_net.load_state_dict({k: v.half().float() for k, v in native_net.state_dict().items()})
    folder_paths.add_model_folder_path("controlnet", str(tmp / "controlnet"))
    native = comfy.controlnet.ControlNet(native_net, load_device=mm.get_torch_device(), manual_cast_dtype=None)
    ours = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load("sd15_random.safetensors")[0]
    return nodes, model, native, ours, n_params, unet


def configurations(nodes, model, native, ours, pos, neg, hint, sigmas):
    apply = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]()
    base = dict(strength=1.0, start_percent=0.0, resize_mode="crop", window_timing="executed steps (diffusers)")
    windowed = model.clone()
    # Give the 2024 host the executed schedule current ComfyUI reports (transformer_options["sample_sigmas"]).
    windowed.model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
    npos, nneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, hint, 1.0, 0.0, 1.0)[:2]
    return {
        "no control": (model, pos, neg, None),
        "ComfyUI native ControlNet": (model, npos, nneg, None),
        "CNR balanced": (apply.apply(model, ours, hint, end_percent=1.0, control_mode="balanced", **base)[0],
                         pos, neg, None),
        "CNR controlnet is more important": (
            apply.apply(model, ours, hint, end_percent=1.0, control_mode="controlnet is more important", **base)[0],
            pos, neg, None),
        "CNR window 0-0.5": (apply.apply(windowed, ours, hint, end_percent=0.5, control_mode="balanced", **base)[0],
                             pos, neg, 0.5),
    }


def run(model, pos, neg, steps, seed=0):
    import comfy.sample
    latent = torch.zeros(1, 4, 32, 32)
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(seed))
    stamps = [time.perf_counter()]
    out = comfy.sample.sample(model, noise, steps, 7.0, "euler", "normal", pos, neg, latent, seed=seed,
                              disable_pbar=True, callback=lambda *a: stamps.append(time.perf_counter()))
    assert torch.isfinite(out).all()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nodes, model, native, ours, n_params, unet = build(Path(tmp))
        import comfy.samplers
        sigmas = comfy.samplers.calculate_sigmas_scheduler(unet, "normal", args.steps) \
            if hasattr(comfy.samplers, "calculate_sigmas_scheduler") else \
            comfy.samplers.calculate_sigmas(unet.model_sampling, "normal", args.steps)
        gen = torch.Generator().manual_seed(1)
        pos = [[torch.randn(1, 77, 768, generator=gen), {}]]
        neg = [[torch.randn(1, 77, 768, generator=gen), {}]]
        hint = torch.rand(1, 256, 256, 3, generator=gen)
        configs = configurations(nodes, model, native, ours, pos, neg, hint, sigmas)
        times = {name: [] for name in configs}  # steps where the configuration's control (if any) acts
        outside = {name: [] for name in configs}  # steps outside a window
        peaks = {name: 0.0 for name in configs}
        for round_index in range(args.rounds + 1):
            for name, (m, p, n, window_end) in configs.items():
                with PeakRss() as rss:
                    step_times = run(m, p, n, args.steps)
                if round_index == 0:
                    continue  # warm-up
                peaks[name] = max(peaks[name], rss.growth)
                for i, t in enumerate(step_times):
                    active = window_end is None or (i + 1) / args.steps <= window_end
                    (times if active else outside)[name].append(t)
    print(f"UNet {sum(p.numel() for p in unet.diffusion_model.parameters()) / 1e6:.0f}M + ControlNet "
          f"{n_params / 1e6:.0f}M params (random), 256x256, cfg 7, euler, {args.steps} steps x {args.rounds} rounds "
          f"(+1 warm-up), torch threads {torch.get_num_threads()}, median seconds per step")
    base = statistics.median(times["no control"])
    native_s = statistics.median(times["ComfyUI native ControlNet"])
    print(f"{'configuration':<36}{'s/step':>8}{'x no control':>14}{'x native':>10}{'peak RSS +MiB':>15}")
    for name in configs:
        for label, samples in ((name, times[name]), ("  steps outside the window", outside[name])):
            if samples:
                med = statistics.median(samples)
                rss = f"{peaks[name]:>15.0f}" if label == name else ""
                print(f"{label:<36}{med:>8.3f}{med / base:>14.3f}{med / native_s:>10.3f}{rss}")
    print("targets: CNR balanced <= 1.00x native; controlnet-is-more-important <= 1.22x no control; "
          "steps outside the window <= 1.02x no control; CNR peak RSS <= native")


if __name__ == "__main__":
    main()
