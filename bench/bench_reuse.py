"""Residual reuse: ControlNet cost per step against quality, with the trained demo models (demo_models/).

The same scenes, prompt and seeds as bench_quality.py (tools/scenes.py, tools/quality.py), through ComfyUI's
KSampler (euler, cfg 5, 128x128) and the pack's Apply node with reuse off (the ControlNet at every step), every
k-th step (k = 2, 3) and the adaptive rule at two thresholds. For each setting:

- ControlNet forwards per sampling (counted; cond and uncond rows run in one forward);
- per-step overhead over sampling without control: the CPU time spent computing and weighting the control
  inside the pack's wrapper (ControlNet forwards, reuse decisions, weighting) and, end to end, the KSampler's
  CPU time minus that of sampling without control (noisier: a difference of two totals); best of
  ``--repeats``; the wrapper's time also as a fraction of computing every step;
- edge F1 to the control edge maps (bench_quality's adherence measure) and its change against every step;
- PSNR of the decoded images to those of computing every step.

CPU; about a minute at the defaults. A host without ``transformer_options["sample_sigmas"]`` (the 2024 CI
host) is given the run's schedule, as ComfyUI 2025 gives it, so reuse can act.

    python bench/bench_reuse.py [--scenes 4] [--seeds 2] [--steps 20] [--repeats 3]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools"))
import demo_models  # noqa: E402
import quality  # noqa: E402
from comfy_host import is_current_host, run_node  # noqa: E402

SETTINGS = [("every step (k=1)", {}), ("k=2", {"reuse_every": 2}), ("k=3", {"reuse_every": 3})]


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def sample(edges, seed: int, steps: int, reuse: dict, controlled: bool = True):
    """``(latent samples, KSampler CPU seconds, CPU seconds in the wrapper's control work)`` for one batch."""
    model, _, _, controlnet = quality.demo_pipeline()
    if not is_current_host():
        import comfy.samplers
        model = model.clone()
        sigmas = comfy.samplers.KSampler(model.model, steps=steps, device="cpu", sampler="euler",
                                         scheduler="normal").sigmas
        model.model_options.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
    control_time = [0.0]
    if controlled:
        (model,) = run_node("CNR_ApplyControlResiduals", model=model, controlnet=controlnet, image=edges, **reuse)
        injection = model.model_options["model_function_wrapper"]
        compute = injection.residuals

        def timed_residuals(*args, **kwargs):
            begin = time.process_time()
            out = compute(*args, **kwargs)
            control_time[0] += time.process_time() - begin
            return out

        injection.residuals = timed_residuals
    size = demo_models.IMAGE_SIZE
    (latent,) = run_node("EmptyLatentImage", width=size, height=size, batch_size=edges.shape[0])
    positive, negative = quality.encode(quality.PROMPT), quality.encode(quality.NEGATIVE)
    start = time.process_time()
    (samples,) = run_node("KSampler", model=model, seed=seed, steps=steps, cfg=5.0, sampler_name="euler",
                          scheduler="normal", positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    return samples, time.process_time() - start, control_time[0]


def decode(samples):
    return run_node("VAEDecode", samples=samples, vae=quality.demo_pipeline()[2])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--thresholds", type=float, nargs=2, default=(0.3, 0.5))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quality.demo_pipeline()
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    _, edges = quality.control_scenes(args.scenes)
    seeds = range(args.seeds)
    controlnet = quality.demo_pipeline()[3]
    forwards = []
    handle = controlnet.net.register_forward_pre_hook(lambda mod, inp: forwards.append(1))
    settings = SETTINGS + [(f"adaptive {t:g}", {"reuse_threshold": t}) for t in args.thresholds]

    sample(edges, 0, args.steps, {})  # warm-up: loads the models
    # Settings take turns within each repeat, so a change of machine load touches them alike; best of the repeats.
    runs = [("no control", None)] + settings
    best = {label: [float("inf")] * len(seeds) for label, _ in runs}
    control = {label: [float("inf")] * len(seeds) for label, _ in runs}
    outs, counts = {}, {label: 0 for label, _ in settings}
    for _ in range(args.repeats):
        for label, reuse in runs:
            for i, seed in enumerate(seeds):
                forwards.clear()
                samples, seconds, inside = sample(edges, seed, args.steps, reuse or {}, controlled=reuse is not None)
                best[label][i] = min(best[label][i], seconds)
                control[label][i] = min(control[label][i], inside)
                if reuse is not None:
                    outs.setdefault(label, {})[seed] = samples
                    counts[label] = len(forwards)
    handle.remove()
    plain_time = mean(best["no control"])
    results = {}
    for label, _ in settings:
        decoded = [decode(outs[label][s]) for s in seeds]
        f1 = mean(quality.edge_f1(edges, d) for d in decoded)
        results[label] = (counts[label], mean(control[label]), mean(best[label]), f1, decoded)

    _, full_control, _, full_f1, full_images = results[SETTINGS[0][0]]
    print()
    print(f"Residual reuse with the trained demo models: {args.scenes} scenes (one batch) x {args.seeds} seeds, "
          f"128x128, euler {args.steps} steps, cfg 5; sampling without control {plain_time / args.steps * 1e3:.1f} "
          f"ms/step (CPU time)")
    print(f"{'setting':<18}{'CN forwards':>12}{'control ms/step':>17}{'x every step':>14}{'end to end ms/step':>20}"
          f"{'edge F1':>9}{'F1 change':>11}{'PSNR to every step':>20}")
    for label, (count, inside, seconds, f1, decoded) in results.items():
        change = (f1 - full_f1) / full_f1 * 100
        if label == SETTINGS[0][0]:
            agreement = "-"
        else:
            agreement = f"{mean(quality.psnr(d, ref) for d, ref in zip(decoded, full_images)):.2f} dB"
        print(f"{label:<18}{count:>12.1f}{inside / args.steps * 1e3:>17.2f}{inside / full_control:>14.2f}"
              f"{(seconds - plain_time) / args.steps * 1e3:>20.2f}{f1:>9.3f}{change:>10.1f}%{agreement:>20}")


if __name__ == "__main__":
    main()
