"""Load time and peak memory: our ControlNet loader vs diffusers' ControlNetModel.from_pretrained.

Writes a full-size SD1.5 ControlNet (361M parameters, random, fp16 safetensors in diffusers layout)
once, then loads it to fp32 alternately with each loader, every load in a fresh process so peak RSS
is that load's own. Prints medians and ratios. Not a test: timings on a shared machine are noisy.

    python bench/bench_loader.py [--runs 3]
"""
import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import current_rss_mib, import_pack, peak_rss_mib  # noqa: E402


def write_weights(folder: Path) -> int:
    from diffusers import ControlNetModel
    torch.manual_seed(0)
    with torch.device("meta"):
        model = ControlNetModel(cross_attention_dim=768)  # SD1.5: 320..1280 channels, 8 heads, 768 context
    model = model.to_empty(device="cpu").to(torch.float16)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    model.save_pretrained(folder, safe_serialization=True)
    return sum(p.numel() for p in model.parameters())


def load_once(kind: str, folder: str) -> None:
    """Child process: load once, print JSON with seconds and memory."""
    import_pack()
    if kind == "ours":
        from cnr_pack.controlnet_core import load_controlnet
    else:
        from diffusers import ControlNetModel
    base = current_rss_mib()
    start = time.perf_counter()
    if kind == "ours":
        model = load_controlnet(Path(folder) / "diffusion_pytorch_model.safetensors", dtype=torch.float32)
    else:
        model = ControlNetModel.from_pretrained(folder, torch_dtype=torch.float32)
    seconds = time.perf_counter() - start
    assert next(model.parameters()).dtype == torch.float32
    print(json.dumps({"seconds": seconds, "peak_mib": peak_rss_mib(), "base_mib": base}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        load_once(*args.child)
        return
    with tempfile.TemporaryDirectory() as tmp:
        n_params = write_weights(Path(tmp))
        fp32_mib = n_params * 4 / 2**20
        results = {"ours": [], "diffusers": []}
        for _ in range(args.runs):
            for kind in results:  # interleaved, so drift hits both alike
                out = subprocess.run([sys.executable, __file__, "--child", kind, tmp],
                                     capture_output=True, text=True, check=True)
                results[kind].append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {k: {f: statistics.median(r[f] for r in v) for f in ("seconds", "peak_mib", "base_mib")}
           for k, v in results.items()}
    print(f"ControlNet SD1.5: {n_params / 1e6:.0f}M params, fp16 file -> fp32, fp32 size {fp32_mib:.0f} MiB, "
          f"{args.runs} interleaved runs, medians")
    print(f"{'loader':<10}{'load s':>9}{'peak RSS MiB':>14}{'peak - baseline':>17}{'/ fp32 size':>13}")
    for kind, m in med.items():
        added = m["peak_mib"] - m["base_mib"]
        print(f"{kind:<10}{m['seconds']:>9.2f}{m['peak_mib']:>14.0f}{added:>17.0f}{added / fp32_mib:>13.2f}")
    print(f"load time ratio ours/diffusers: {med['ours']['seconds'] / med['diffusers']['seconds']:.2f} (target <= 1.0)")
    added = med["ours"]["peak_mib"] - med["ours"]["base_mib"]
    print(f"our peak RSS over baseline / fp32 weight size: {added / fp32_mib:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
