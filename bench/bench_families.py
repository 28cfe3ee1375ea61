"""Per-step cost of a Control-LoRA and of a multi-type ControlNet Union, beside ComfyUI's own path.

``control-lora``: full-size SD1.5-shaped random UNet (860M) and a rank-128 Control-LoRA written at
run time (random up/down pairs over every weight shared with the UNet, random hint block and zero
convolutions). Configurations: no control, ComfyUI's own ControlLora (it forms ``up @ down`` in
every forward), CNR's (merged once when the Apply node runs; that one-off time is reported apart),
and a classic CNR ControlNet of the same size. 256x256, cfg 7 (batch 2 per model call), euler;
configurations interleaved round after round after a warm-up round; per-step times from the
sampler's step callback.

``union``: the ControlNet Union module alone, SDXL-shaped (``--union-width 320`` is full size,
1.25B parameters), batch 2 at a 64x64 latent: two control types in one pass against two chained
one-type passes (what ComfyUI core does: one type per ControlNet), hint embeddings precomputed as
the sampler wrapper caches them.

Not a test: timings on a shared machine are noisy, only ratios measured side by side mean anything.

    python bench/bench_families.py [--part control-lora|union|all] [--steps 4] [--rounds 2]
        [--configs "no control,ComfyUI ControlLora,CNR Control-LoRA,CNR classic ControlNet"]
        [--union-width 320] [--union-reps 3]
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tools"))
from _common import import_pack, peak_rss_mib  # noqa: E402
from bench_sampling import SD15_UNET, random_sd15_unet, run  # noqa: E402

CONTROL_ONLY = ("input_hint_block.", "zero_convs.", "middle_block_out.")
CONFIGS = ("no control", "ComfyUI ControlLora", "CNR Control-LoRA", "CNR classic ControlNet")


def _controlnet_keys():
    import comfy.cldm.cldm
    cfg = {k: v for k, v in SD15_UNET.items() if k not in ("out_channels", "transformer_depth_output")}
    return comfy.cldm.cldm.ControlNet(hint_channels=3, dtype=torch.float32, device="meta", **cfg).state_dict()


def write_control_lora(path: Path, unet_state, rank: int, gen) -> int:
    """A rank-``rank`` Control-LoRA for the UNet, in fp16 like Stability's files; returns its tensor count."""
    from safetensors.torch import save_file
    file = {"lora_controlnet": torch.tensor([])}
    for key, meta in _controlnet_keys().items():
        if key.startswith(CONTROL_ONLY) or meta.ndim < 2:
            file[key] = (torch.randn(meta.shape, generator=gen) * 0.02).half()
        else:
            assert key in unet_state, key
            module = key[: -len(".weight")]
            file[module + ".up"] = (torch.randn((meta.shape[0], rank) + (1,) * (meta.ndim - 2), generator=gen)
                                    * 0.02).half()
            file[module + ".down"] = (torch.randn((rank,) + tuple(meta.shape[1:]), generator=gen) * 0.02).half()
    save_file(file, str(path))
    return len(file)


def write_classic(path: Path, gen) -> None:
    from safetensors.torch import save_file
    save_file({k: (torch.randn(v.shape, generator=gen) * 0.02).half() for k, v in _controlnet_keys().items()},
              str(path))


def bench_control_lora(args) -> None:
    import comfy_host
    nodes = comfy_host.boot()
    import comfy.controlnet
    import folder_paths

    model, unet = random_sd15_unet()
    gen = torch.Generator().manual_seed(1)
    pos = [[torch.randn(1, 77, 768, generator=gen), {}]]
    neg = [[torch.randn(1, 77, 768, generator=gen), {}]]
    hint = torch.rand(1, 256, 256, 3, generator=gen)
    wanted = [c.strip() for c in args.configs.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder_paths.add_model_folder_path("controlnet", tmp)
        write_control_lora(Path(tmp) / "control-lora-random-rank128.safetensors",
                           unet.diffusion_model.state_dict(), args.rank, gen)
        configs, merge_s = {}, None
        apply = nodes.NODE_CLASS_MAPPINGS["CNR_ApplyControlResiduals"]()
        load = nodes.NODE_CLASS_MAPPINGS["CNR_ControlNetLoader"]().load
        common = dict(strength=1.0, start_percent=0.0, end_percent=1.0, control_mode="balanced", resize_mode="crop",
                      window_timing="model sigma (ComfyUI)")
        if "no control" in wanted:
            configs["no control"] = (model, pos, neg)
        if "ComfyUI ControlLora" in wanted:
            native = comfy.controlnet.load_controlnet(str(Path(tmp) / "control-lora-random-rank128.safetensors"))
            configs["ComfyUI ControlLora"] = (model,) + tuple(
                nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, native, hint, 1.0, 0.0, 1.0)[:2])
        if "CNR Control-LoRA" in wanted:
            pending = load("control-lora-random-rank128.safetensors")[0]
            start = time.perf_counter()
            configs["CNR Control-LoRA"] = (apply.apply(model, pending, hint, **common)[0], pos, neg)
            merge_s = time.perf_counter() - start
        if "CNR classic ControlNet" in wanted:
            write_classic(Path(tmp) / "classic-random.safetensors", gen)
            configs["CNR classic ControlNet"] = (apply.apply(model, load("classic-random.safetensors")[0], hint,
                                                             **common)[0], pos, neg)
        times = {name: [] for name in configs}
        for round_index in range(args.rounds + 1):
            for name, (m, p, n) in configs.items():
                step_times = run(m, p, n, args.steps)
                if round_index:
                    times[name] += step_times
    print(f"Control-LoRA: UNet {sum(p.numel() for p in unet.diffusion_model.parameters()) / 1e6:.0f}M (random), "
          f"rank {args.rank}, 256x256, cfg 7, euler, {args.steps} steps x {args.rounds} rounds (+1 warm-up), "
          f"torch threads {torch.get_num_threads()}, median seconds per step; peak RSS {peak_rss_mib():.0f} MiB")
    medians = {name: statistics.median(t) for name, t in times.items()}
    ref = {k: medians.get(k) for k in ("no control", "ComfyUI ControlLora", "CNR classic ControlNet")}
    print(f"{'configuration':<26}{'s/step':>8}" + "".join(f"{'x ' + k:>26}" for k, v in ref.items() if v))
    for name, med in medians.items():
        print(f"{name:<26}{med:>8.3f}" + "".join(f"{med / v:>26.3f}" for v in ref.values() if v))
    if merge_s is not None:
        print(f"CNR merge at Apply (once per Control-LoRA and MODEL): {merge_s:.2f} s")
    print("targets: CNR Control-LoRA <= 1.00x ComfyUI ControlLora and <= 1.02x CNR classic ControlNet")


def sdxl_union(width: int):
    import_pack()
    from cnr_pack.controlnet_core.families.union.model import UnionConfig, UnionControlNet
    config = UnionConfig(model_channels=width, channel_mult=(1, 2, 4), num_res_blocks=(2, 2, 2),
                         transformer_depth=(0, 0, 2, 2, 10, 10), transformer_depth_middle=10, context_dim=2048,
                         num_heads=-1, num_head_channels=64, use_linear_in_transformer=True, adm_in_channels=2816,
                         num_control_types=8, family="sdxl")
    with torch.device("meta"):
        net = UnionControlNet(config)
    net.to_empty(device="cpu")
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.02)
    return net.eval().requires_grad_(False)


def bench_union(args) -> None:
    net = sdxl_union(args.union_width)
    gen = torch.Generator().manual_seed(2)
    x, t = torch.randn(2, 4, 64, 64, generator=gen), torch.tensor([700.0, 700.0])
    context, y = torch.randn(2, 77, 2048, generator=gen), torch.randn(2, 2816, generator=gen)
    canny, depth = torch.rand(1, 3, 512, 512, generator=gen), torch.rand(1, 3, 512, 512, generator=gen)
    with torch.no_grad():
        both = net.embed_hint([canny, depth], control_type=(3, 1))
        alone = [net.embed_hint(canny, control_type=3), net.embed_hint(depth, control_type=1)]

        def one_pass():
            return net(x, t, context, [canny, depth], y, control_type=(3, 1), hint_embedding=both)

        def chained():
            a = net(x, t, context, canny, y, control_type=3, hint_embedding=alone[0])
            b = net(x, t, context, depth, y, control_type=1, hint_embedding=alone[1])
            return a.with_tensors([p + q for p, q in zip(a.tensors, b.tensors)])

        times = {"2 types, one pass": [], "2 chained one-type passes": []}
        for rep in range(args.union_reps + 1):
            for name, fn in (("2 types, one pass", one_pass), ("2 chained one-type passes", chained)):
                start = time.perf_counter()
                fn()
                if rep:
                    times[name].append(time.perf_counter() - start)
    one, two = (statistics.median(v) for v in times.values())
    print(f"Union: SDXL-shaped ControlNet Union, width {args.union_width} "
          f"({sum(p.numel() for p in net.parameters()) / 1e6:.0f}M params, random), batch 2, 64x64 latent, "
          f"{args.union_reps} reps (+1 warm-up), torch threads {torch.get_num_threads()}, median seconds per call; "
          f"peak RSS {peak_rss_mib():.0f} MiB")
    print(f"2 types, one pass            {one:8.3f}")
    print(f"2 chained one-type passes    {two:8.3f}")
    print(f"ratio                        {one / two:8.3f}   (target <= 0.6)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("control-lora", "union", "all"), default="all")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rank", type=int, default=128)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--union-width", type=int, default=320)
    parser.add_argument("--union-reps", type=int, default=3)
    args = parser.parse_args()
    if args.part in ("union", "all"):
        bench_union(args)
    if args.part in ("control-lora", "all"):
        bench_control_lora(args)


if __name__ == "__main__":
    main()
