"""Shared benchmark helpers: importing the pack without its root ``__init__``, memory readings, and the
side-by-side timing of sampling runs the per-family benchmarks share."""
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from comfy_host import import_pack  # noqa: E402,F401  (re-exported for the benchmarks)

# The command-line flag of ComfyUI that makes its loaders (and ours) pick each weight dtype, as they would on a
# GPU that computes in it.
DTYPE_FLAGS = {"bfloat16": "bf16_unet", "float16": "fp16_unet", "float32": "fp32_unet"}


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def randomized(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """``module`` with every parameter drawn from N(0, 0.02^2), seeded, in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return module.eval()


def random_taesd_vae(seed: int):
    """ComfyUI's VAE around a 16-channel TAESD with seeded random weights: only a hint's encoding uses it."""
    import comfy.sd
    import comfy.taesd.taesd
    gen = torch.Generator().manual_seed(seed)
    taesd = comfy.taesd.taesd.TAESD(latent_channels=16).state_dict()
    return comfy.sd.VAE(sd={k: v if v.ndim == 0 else torch.randn(v.shape, generator=gen) * 0.05
                            for k, v in taesd.items()})


def step_seconds(model, positive, negative, latent: torch.Tensor, steps: int) -> list:
    """One euler run at cfg 1 through ``comfy.sample.sample``: the seconds of each step, from its step callback."""
    import comfy.sample
    noise = torch.randn(latent.shape, generator=torch.Generator().manual_seed(0))
    stamps = [time.perf_counter()]
    out = comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", positive, negative, latent, seed=0,
                              disable_pbar=True, callback=lambda *a: stamps.append(time.perf_counter()))
    assert torch.isfinite(out).all()
    return [b - a for a, b in zip(stamps, stamps[1:])]


def interleaved_step_times(configs: dict, latent: torch.Tensor, steps: int, rounds: int) -> dict:
    """Per-step seconds of each configuration (name -> (model, positive, negative)), the configurations run
    interleaved round after round so that drifts of the machine hit them alike. One warm-up round is left out,
    and the first step of each run, which also encodes the hint."""
    times = {name: [] for name in configs}
    for round_index in range(rounds + 1):
        for name, (model, positive, negative) in configs.items():
            seconds = step_seconds(model, positive, negative, latent, steps)
            if round_index:
                times[name] += seconds[1:]
    return times


def print_step_table(times: dict, baseline: str, native: str) -> None:
    """Median seconds per step of each configuration, and its ratios to ``baseline`` (no control) and ``native``
    (ComfyUI's own ControlNet)."""
    base, native_s = statistics.median(times[baseline]), statistics.median(times[native])
    width = max(map(len, times)) + 4
    print(f"{'configuration':<{width}}{'s/step':>8}{'x no control':>14}{'x ComfyUI':>11}")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(f"{name:<{width}}{med:>8.3f}{med / base:>14.3f}{med / native_s:>11.3f}")


def cnr_controlnet(nodes, state_dict: dict, folder: Path, name: str, vae):
    """``state_dict`` written as ``folder/name``, the folder listed as a ComfyUI controlnet folder, and the file
    loaded through CNR_ControlNetLoader with CNR_HintVAE attaching ``vae``."""
    import folder_paths
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state_dict.items()}, str(folder / name))
    folder_paths.add_model_folder_path("controlnet", str(folder))
    loaded = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load(name)[0]
    return nodes.NODE_CLASS_MAPPINGS["CNR_HintVAE"]().attach(loaded, vae)[0]


def native_and_cnr_step_times(nodes, model, native, ours, vae, conditioning: tuple, latent: torch.Tensor,
                              hint: torch.Tensor, native_name: str, steps: int, rounds: int) -> dict:
    """:func:`interleaved_step_times` of three configurations at strength 1 over the whole run: "no control",
    ComfyUI's own ControlNet ``native`` through ControlNetApplyAdvanced (as ``native_name``), and "CNR balanced",
    the pack's ``ours`` through CNR_ApplyControlResiduals. ``conditioning`` is (positive, negative)."""
    pos, neg = conditioning
    npos, nneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, hint, 1.0, 0.0, 1.0, vae=vae)[:2]
    apply = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]()
    patched = apply.apply(model, ours, hint, 1.0, 0.0, 1.0, "balanced", "crop", "executed steps (diffusers)")[0]
    configs = {"no control": (model, pos, neg), native_name: (model, npos, nneg), "CNR balanced": (patched, pos, neg)}
    return interleaved_step_times(configs, latent, steps, rounds)
