"""Output quality with the small trained demo models (demo_models/): the yardstick later features are judged by.

Fixed seeded scenes (tools/scenes.py, a seed the training never used) and a fixed prompt, through ComfyUI's
own sampler and nodes and the pack's nodes (tools/quality.py), 128x128, euler, cfg 5:

- control adherence: edge F1 between each scene's Canny edge map (the control image) and the edges of the
  output, without the ControlNet, at strength 0 / 0.5 / 1, in each control mode, and with a window;
- img2img fidelity: PSNR and SSIM of the output to the input scene over strength (CNR_Img2ImgStrength +
  SamplerCustom), without and with the ControlNet;
- inpainting (CNR_InpaintMaskPrep, paste with its feathered mask): the largest change outside the mask (0 =
  exact) and the colour step across the mask border next to the input's own step there.

Each figure is a mean over scenes x seeds. CPU, about 2-4 minutes.

    python bench/bench_quality.py [--scenes 6] [--seeds 2] [--steps 12]
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools"))
import quality  # noqa: E402
import scenes  # noqa: E402
from comfy_host import run_node  # noqa: E402


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def img2img(image, control, strength: float, seed: int, steps: int, controlled: bool):
    model, _, vae, controlnet = quality.demo_pipeline()
    if controlled:
        (model,) = run_node("CNR_ApplyControlResiduals", model=model, controlnet=controlnet, image=control)
    (sigmas, _, _) = run_node("CNR_Img2ImgStrength", model=model, scheduler="normal", steps=steps, strength=strength)
    (latent,) = run_node("VAEEncode", pixels=image, vae=vae)
    (sampler,) = run_node("KSamplerSelect", sampler_name="euler")
    out = run_node("SamplerCustom", model=model, add_noise=True, noise_seed=seed, cfg=5.0,
                   positive=quality.encode(quality.PROMPT), negative=quality.encode(quality.NEGATIVE),
                   sampler=sampler, sigmas=sigmas, latent_image=latent)
    (decoded,) = run_node("VAEDecode", samples=out[0], vae=vae)
    return decoded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    images, edges = quality.control_scenes(args.scenes)
    seeds = range(args.seeds)
    quality.demo_pipeline()
    rows = []

    def adherence(label, **options):
        f1 = mean(quality.edge_f1(edges, quality.generate(edges, seed=s, steps=args.steps, **options)) for s in seeds)
        rows.append(("control adherence", label, f"edge F1 {f1:.3f}"))
        print(f"  {label}: {f1:.3f}", flush=True)

    print("control adherence (edge F1 to the control edge map)", flush=True)
    adherence("no ControlNet", controlled=False)
    for strength in (0.0, 0.5, 1.0):
        adherence(f"strength {strength:g}, balanced", strength=strength)
    for mode in ("prompt", "controlnet"):
        adherence(f"strength 1, mode {mode}", mode=mode)
    adherence("strength 1, window 0-0.5", end=0.5)
    adherence("strength 1, window 0.5-1", start=0.5)
    reference = quality.edge_f1(edges, images)
    rows.append(("control adherence", "the input scenes themselves", f"edge F1 {reference:.3f}"))

    print("img2img fidelity (to the input scene)", flush=True)
    for strength in (0.25, 0.5, 0.75, 1.0):
        for controlled in (False, True):
            outs = [img2img(images, edges, strength, s, args.steps, controlled) for s in seeds]
            p = mean(quality.psnr(o, images) for o in outs)
            q = mean(quality.ssim(o, images) for o in outs)
            label = f"strength {strength:g}" + (", ControlNet 1" if controlled else "")
            rows.append(("img2img", label, f"PSNR {p:5.2f} dB  SSIM {q:.3f}"))
            print(f"  {label}: PSNR {p:.2f} SSIM {q:.3f}", flush=True)

    print("inpainting", flush=True)
    masks = torch.from_numpy(np.stack([scenes.random_mask(np.random.default_rng(100 + i), images.shape[1])
                                       for i in range(len(images))]))
    for strength in (0.0, 1.0):
        results = [quality.inpaint(images, masks, edges, seed=s, steps=args.steps, strength=strength)
                   for s in seeds]
        outside = max(quality.outside_mask_error(out, images, masks) for out, _, _ in results)
        seam = mean(quality.seam_step(out, sample) for out, sample, _ in results)
        own = quality.seam_step(images, results[0][1])
        label = f"ControlNet strength {strength:g}"
        rows.append(("inpaint", label, f"outside-mask max change {outside:.4f}  seam step {seam:.3f} "
                                       f"(input {own:.3f})"))
        print(f"  {label}: outside {outside:.4f} seam {seam:.3f} (input {own:.3f})", flush=True)

    print()
    print(f"Quality with the trained demo models: {args.scenes} scenes x {args.seeds} seeds, 128x128, euler "
          f"{args.steps} steps, cfg 5, prompt {quality.PROMPT!r} ({time.perf_counter() - start:.0f} s)")
    print(f"{'measure':<19}{'setting':<32}value")
    for group, label, value in rows:
        print(f"{group:<19}{label:<32}{value}")


if __name__ == "__main__":
    main()
