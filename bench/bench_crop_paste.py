"""Crop and paste speed: a 2048x2048 image, a 204x256 mask, cropped to 512x512 on the CPU.

Prints median seconds over repeated runs. Not a test: timings on a shared machine are noisy.

    python bench/bench_crop_paste.py [--runs 7]
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import import_pack  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    import_pack()
    from cnr_pack.controlnet_core.refine.crop import crop, paste, plan_crop

    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 2048, 2048, generator=gen)
    mask = torch.zeros(1, 2048, 2048)
    mask[0, 900:1104, 700:956] = 1.0  # 204 x 256
    results = {"crop": [], "paste": []}
    generated = torch.rand(1, 3, 512, 512, generator=gen)
    for _ in range(args.runs):
        start = time.perf_counter()
        transform = plan_crop(mask, 32, (512, 512), filter="bicubic", paste_mode="mask", feather=16)
        cropped = crop(image, transform)
        results["crop"].append(time.perf_counter() - start)
        start = time.perf_counter()
        out = paste(image, generated, transform)
        results["paste"].append(time.perf_counter() - start)
    assert cropped.shape == (1, 3, 512, 512) and out.shape == image.shape
    box = transform.boxes[0]
    print(f"2048x2048 image, 204x256 mask, padding 32 -> box {box.w}x{box.h} -> 512x512, bicubic, "
          f"feather 16, {args.runs} runs, torch threads {torch.get_num_threads()}")
    targets = {"crop": 0.4, "paste": 0.05}
    for name, times in results.items():
        med = statistics.median(times)
        print(f"{name:<6} median {med * 1000:8.1f} ms   target <= {targets[name] * 1000:.0f} ms   "
              f"({'met' if med <= targets[name] else 'MISSED'})")


if __name__ == "__main__":
    main()
