"""The core parity checks on an accelerator in half precision: our ControlNet residuals against diffusers'
ControlNetModel with identical weights (SD1.5-, SD2- and SDXL-shaped tiny seeded models, every layer
randomised), on ComfyUI's torch device, in fp16 and bf16.

Both run in the same dtype on the same device and are compared with the fp32 CPU result of diffusers: ours
passes when its error is at most twice diffusers' own half-precision error (plus a small floor), i.e. it
rounds no worse than the reference implementation does. Prints one row per model and dtype; exits 1 on a
failure.

    python bench/gpu_parity.py [--dtypes fp16 bf16] [--allow-cpu]
"""
import argparse
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tools"))
sys.path.insert(0, str(HERE.parent / "tests"))

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
FLOOR = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5}


def device_from_comfyui(allow_cpu: bool) -> torch.device:
    """ComfyUI's own choice of torch device (comfy.model_management), booted without forcing the CPU."""
    import comfy_host
    root = str(comfy_host.comfyui_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    if not torch.cuda.is_available():
        if not allow_cpu:
            raise SystemExit("gpu_parity: torch sees no CUDA device (torch.cuda.is_available() is False); run on a "
                             "machine with an NVIDIA GPU and CUDA torch, or pass --allow-cpu for a dry run")
        import comfy.cli_args
        comfy.cli_args.args.cpu = True  # ComfyUI's model management fails to import without a GPU otherwise
    import comfy.model_management as mm
    return torch.device(mm.get_torch_device())


def residual_error(ours, theirs_down, theirs_mid, ref_down, ref_mid):
    ours_t = list(ours.output) + [ours.middle[0]]
    theirs_t = list(theirs_down) + [theirs_mid]
    ref_t = list(ref_down) + [ref_mid]
    scale = max(r.abs().max().item() for r in ref_t)
    err_ours = max((o.float().cpu() - r).abs().max().item() for o, r in zip(ours_t, ref_t)) / scale
    err_theirs = max((t.float().cpu() - r).abs().max().item() for t, r in zip(theirs_t, ref_t)) / scale
    return err_ours, err_theirs


def check(name, factory, dtype, device, sdxl=False):
    from cnr_pack.controlnet_core import diffusers_to_original, load_controlnet
    from tiny_models import TEXT_EMBED_DIM, sample_inputs, sdxl_y
    reference = factory().eval()
    x, t, context, hint = sample_inputs()
    extra, y = {}, None
    if sdxl:
        gen = torch.Generator().manual_seed(5)
        text = torch.randn(2, TEXT_EMBED_DIM, generator=gen)
        time_ids = torch.tensor([[64.0, 64.0, 0.0, 0.0, 64.0, 64.0], [96.0, 64.0, 8.0, 0.0, 64.0, 64.0]])
        extra = {"added_cond_kwargs": {"text_embeds": text, "time_ids": time_ids}}
        y = sdxl_y(text, time_ids)
    with torch.no_grad():
        ref_down, ref_mid = reference(x, t, context, hint, return_dict=False, **extra)
        ours = load_controlnet({"control_model." + k: v for k, v in
                                diffusers_to_original(reference.state_dict()).items()}, dtype=dtype, device=device)
        theirs = reference.to(device=device, dtype=dtype)

        def on(v):
            return v.to(device=device, dtype=dtype)
        extra_dev = {"added_cond_kwargs": {k: on(v) for k, v in extra["added_cond_kwargs"].items()}} if sdxl else {}
        down, mid = theirs(on(x), t.to(device), on(context), on(hint), return_dict=False, **extra_dev)
        res = ours(on(x), t.to(device), on(context), on(hint), *([on(y)] if sdxl else []))
    err_ours, err_theirs = residual_error(res, down, mid, ref_down, ref_mid)
    passed = err_ours <= 2 * err_theirs + FLOOR[dtype]
    return name, err_ours, err_theirs, passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=list(DTYPES))
    parser.add_argument("--allow-cpu", action="store_true", help="dry run on the CPU (no accelerator needed)")
    args = parser.parse_args()
    import comfy_host
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()  # its note on casting a whole model with .to(dtype)
    comfy_host.import_pack()
    device = device_from_comfyui(args.allow_cpu)
    from tiny_models import tiny_sd2_diffusers, tiny_sd15_diffusers, tiny_sdxl_diffusers
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}")
    print(f"{'model':<8}{'dtype':<7}{'ours rel err':>14}{'diffusers rel err':>19}  result")
    failed = 0
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        for name, factory, sdxl in (("sd15", tiny_sd15_diffusers, False), ("sd2", tiny_sd2_diffusers, False),
                                    ("sdxl", tiny_sdxl_diffusers, True)):
            name, err_ours, err_theirs, passed = check(name, factory, dtype, device, sdxl)
            failed += not passed
            print(f"{name:<8}{dtype_name:<7}{err_ours:>14.2e}{err_theirs:>19.2e}  {'ok' if passed else 'FAIL'}")
    if failed:
        raise SystemExit(f"gpu_parity: {failed} check(s) rounded worse than diffusers")


if __name__ == "__main__":
    main()
