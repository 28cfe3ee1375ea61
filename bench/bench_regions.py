"""Several regions in one pass: a 2048x2048 image with 4 islands, side by side in one run.

(a) crop + paste: regions mode (one plan, one crop batch, one paste) vs the same 4 regions done one
    at a time (single-region crop and paste 4 times, what Inpaint-CropAndStitch users do), and vs
    Inpaint-CropAndStitch itself run 4 times when its source file is given (measured only; it is
    loaded from wherever you keep it, never copied here):
        git --git-dir=<snapshot> show HEAD:inpaint_cropandstitch.py > /tmp/cas.py
        python bench/bench_regions.py --cas /tmp/cas.py
(b) end to end on the tiny test model in a real ComfyUI (CPU): crop, mask prep, one sampler call
    on the batch of 4, decode, paste vs 4 single-region runs.

Prints median seconds over repeated runs. Not a test: timings on a shared machine are noisy.
"""
import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import import_pack  # noqa: E402

ISLANDS = ((200, 300), (900, 1500), (1500, 400), (1600, 1600))  # top-left corners of 200x256 islands
SIZE = 2048


def _scene():
    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    masks = torch.zeros(len(ISLANDS), SIZE, SIZE)
    for k, (y, x) in enumerate(ISLANDS):
        masks[k, y:y + 200, x:x + 256] = 1.0
    return image, masks


def _median(fn, runs):
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def crop_paste(runs, cas_file):
    from cnr_pack.controlnet_core.refine.crop import crop, paste, plan_crop
    from cnr_pack.controlnet_core.refine.regions import CropSpec, plan
    image, masks = _scene()
    union = masks.amax(0, keepdim=True)
    generated = torch.rand(4, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    options = dict(pad=32, output_size=(512, 512), feather=16)

    def regions():
        t = plan(union, CropSpec(regions="islands", **options)).transform
        crop(image, t)
        return paste(image, generated, t)

    def one_at_a_time():
        out = image
        for k in range(4):
            t = plan_crop(masks[k:k + 1], options["pad"], options["output_size"], feather=options["feather"])
            crop(image, t)
            out = paste(out, generated[k:k + 1], t)
        return out

    assert torch.equal(regions(), one_at_a_time())
    rows = {"regions (1 plan, 1 batch)": _median(regions, runs), "single region x4": _median(one_at_a_time, runs)}
    if cas_file:
        rows["Inpaint-CropAndStitch x4 (cpu)"] = _median(_cas_runner(cas_file, image, masks, generated), runs)
    return rows


def _cas_runner(cas_file, image, masks, generated):
    import comfy_host
    comfy_host.boot()
    spec = importlib.util.spec_from_file_location("cas_measured", cas_file)
    cas = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cas)
    crop_node, stitch_node = cas.InpaintCropImproved(), cas.InpaintStitchImproved()
    defaults = {name: opts[1]["default"] for name, opts in crop_node.INPUT_TYPES()["required"].items()
                if len(opts) > 1 and "default" in opts[1]}
    defaults["device_mode"] = "cpu"
    pixels, pieces = image.movedim(1, -1), generated.movedim(1, -1)

    def run():
        out = pixels
        for k in range(4):
            stitcher, _, _ = crop_node.inpaint_crop(image=out, mask=masks[k:k + 1], **defaults)
            (out,) = stitch_node.inpaint_stitch(stitcher, pieces[k:k + 1])
        return out
    return run


def end_to_end(runs, size):
    import comfy.sample
    import comfy_host
    from comfy_host import run_node
    comfy_host.boot()
    model, vae = comfy_host.tiny_unet(), comfy_host.tiny_vae()
    image, masks = _scene()
    pixels = image.movedim(1, -1)
    crop_options = dict(padding=32, width=size, height=size, feather=16)
    pos, neg = comfy_host.conditioning(3), comfy_host.conditioning(4)
    noise = torch.randn(4, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(5))

    def one_pass(mask, regions, original, rows):
        crops, crop_masks, crop, _ = run_node("CNR_PaddedCrop", image=pixels, mask=mask, regions=regions,
                                              **crop_options)
        latent, _, paste_mask, _, p, n = run_node("CNR_InpaintMaskPrep", image=crops, mask=crop_masks, vae=vae,
                                                  feather=8, positive=pos, negative=neg)
        samples = comfy.sample.sample(model, noise[rows], 4, 5.0, "euler", "normal", p, n, latent["samples"],
                                      noise_mask=latent["noise_mask"], seed=5, disable_pbar=True)
        return run_node("CNR_PaddedPaste", original=original, generated=vae.decode(samples), crop=crop,
                        paste_mask=paste_mask)[0]

    def batched():
        return one_pass(masks.amax(0), "islands", pixels, slice(0, 4))

    def single_x4():
        out = pixels
        for k in range(4):
            out = one_pass(masks[k], "single", out, slice(k, k + 1))
        return out
    batched()  # model load and first-call costs out of the timings
    return {"regions: 1 sampler call on 4 crops": _median(batched, runs),
            "single region x4: 4 sampler calls": _median(single_x4, runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cas", help="path to Inpaint-CropAndStitch's inpaint_cropandstitch.py, to time it beside")
    parser.add_argument("--crop-size", type=int, default=256, help="crop size for (b), a multiple of 64")
    parser.add_argument("--skip-sampler", action="store_true", help="only (a)")
    args = parser.parse_args()
    import_pack()
    print(f"{SIZE}x{SIZE} image, 4 islands of 256x200, torch threads {torch.get_num_threads()}, {args.runs} runs")
    a = crop_paste(args.runs, args.cas)
    print("(a) crop + paste, 512x512 crops, padding 32, feather 16")
    base = a["single region x4"]
    for name, seconds in a.items():
        print(f"    {name:<34} median {seconds * 1000:8.1f} ms   {seconds / base:5.2f}x single x4")
    cas = a.get("Inpaint-CropAndStitch x4 (cpu)")
    if cas:
        ratio = a["regions (1 plan, 1 batch)"] / cas
        print(f"    regions vs Inpaint-CropAndStitch x4: {ratio:.3f}x   target <= 0.05x "
              f"({'met' if ratio <= 0.05 else 'MISSED'})")
    if not args.skip_sampler:
        b = end_to_end(args.runs, args.crop_size)
        print(f"(b) end to end on the tiny model (CPU), {args.crop_size}x{args.crop_size} crops, 4 euler steps")
        for name, seconds in b.items():
            print(f"    {name:<38} median {seconds:7.2f} s")
        ratio = b["regions: 1 sampler call on 4 crops"] / b["single region x4: 4 sampler calls"]
        print(f"    batched vs single x4: {ratio:.2f}x   target <= 1.0x ({'met' if ratio <= 1.0 else 'MISSED'})")


if __name__ == "__main__":
    main()
