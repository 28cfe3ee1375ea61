"""Train the small demo models in ``demo_models/`` on the CPU, from nothing but procedural scenes.

    python tools/train_demo_models.py [--out demo_models] [--threads 1] [--scale 1.0] [--only-controlnet]

In order: a procedural data set (tools/scenes.py: sky gradient, sun, hills, houses, trees in varied colours
and places; their Canny edge maps), a small SD-layout VAE (8x down, 4 latent channels), a small SD1.5-layout
UNet (cross-attention on the stand-in text encoder's word vectors, epsilon prediction on SD's discrete
schedule, 10% prompt dropout for classifier-free guidance), then a ControlNet in the SD1.5 layout (the pack's
``ControlNet``, encoder copied from that UNet, zero convolutions) trained on the edge maps with the UNet
frozen and 50% prompt dropout, as in the ControlNet paper, its loss weighted towards the noisy end (where
the layout, and so the edges, of a sample is decided).

Seeded throughout, each stage from its own seed, and the ControlNet trains against the fp16 UNet that is
shipped, so ``--only-controlnet`` (which reads the checkpoint already in ``--out``) gives the ControlNet the
full run gives. The weights are written in fp16, the checkpoint as soon as the UNet is trained.
``--scale`` multiplies every step count (0.05 for a pilot run that sizes the budget).
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import demo_models  # noqa: E402
import scenes  # noqa: E402
from comfy_host import boot, comfyui_root, import_pack  # noqa: E402

SEED = 20
N_SCENES = 2500
# The VAE is convolutional: it trains on 32 px crops, then on 64 px crops for the last 15% of its steps.
VAE_STEPS, VAE_BATCH, VAE_CROPS = 800, 8, (32, 64)
UNET_STEPS, UNET_BATCH, UNET_LR = 2400, 32, 8e-4
CN_STEPS, CN_BATCH, CN_LR = 1400, 32, 1e-3
# The ControlNet's per-sample loss weight sigma^2 = (1 - abar) / abar is capped here (reached at t = 796;
# it is 1 below t = 354).
CN_WEIGHT_CAP = 25.0
# The UNet's EMA horizon (about 1 / (1 - decay) steps); short, since the run is.
EMA_DECAY = 0.995
GRAD_CLIP = 1.0
# SD's latent scale: ComfyUI multiplies VAE latents by it before sampling.
SCALE_FACTOR = 0.18215


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:7.1f} s] {message}", flush=True)


def alphas_cumprod() -> torch.Tensor:
    """SD's discrete schedule ("scaled linear" betas 0.00085..0.012 over 1000 steps), as ComfyUI's
    ModelSamplingDiscrete builds it."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1 - betas, 0).float()


def lr_at(step: int, total: int, peak: float) -> float:
    warm = max(1, total // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm))))


def seed_stage(stage: int) -> torch.Generator:
    """Each stage (0: VAE, 1: UNet, 2: ControlNet) draws from its own seed, so one stage can be rerun alone and
    draw what the full run drew: seeds torch's global generator (the layers' initialisation) and returns the
    stage's own generator (its batches, noise and timesteps)."""
    torch.manual_seed(SEED + 1000 * stage)
    return torch.Generator().manual_seed(SEED + 1000 * stage)


def control_loss_weights(t: torch.Tensor, ac: torch.Tensor) -> torch.Tensor:
    """Per-sample weights ``(B,)`` of the ControlNet's epsilon loss: ``sigma^2 = (1 - abar) / abar``, kept
    within 1..CN_WEIGHT_CAP.

    An epsilon error at noise level sigma is an error sigma times as large in the predicted image, and an Euler
    step from sigma moves the latent by about that much; so at the noisy end, where a sample's layout (and so
    its edges) is decided, the plain epsilon loss all but ignores what the control is for (at t = 999 it
    weighs an image error by abar = 0.005). Weighting by sigma^2 is the loss on the predicted image there;
    the cap keeps the last, near-pure-noise steps from drowning out the rest of the batch."""
    sigma2 = (1 - ac[t]) / ac[t]
    return sigma2.clamp(1.0, CN_WEIGHT_CAP)


def train_vae(images: torch.Tensor, steps: int, gen: torch.Generator, start: float):
    """AutoencoderKL on random crops (it is convolutional): L1 + MSE reconstruction and a small KL term.

    Unlike the other stages, no gradient clipping: with it, a run reconstructed worse (L1 0.21 against 0.16
    on images in -1..1). Stage 0's seed is ``SEED`` itself, so this stage gives the VAE the first demo models
    had."""
    vae = demo_models.build_vae_model()
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    n, _, size, _ = images.shape
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, 1e-3)
        idx = torch.randint(0, n, (VAE_BATCH,), generator=gen)
        crop = VAE_CROPS[0] if step < 0.85 * steps else VAE_CROPS[1]
        y0, x0 = (int(v) for v in torch.randint(0, size - crop + 1, (2,), generator=gen) // 8 * 8)
        x = images[idx, :, y0:y0 + crop, x0:x0 + crop]
        moments = vae.quant_conv(vae.encoder(x))
        mean, logvar = moments.chunk(2, 1)
        logvar = logvar.clamp(-30, 20)
        z = mean + torch.randn(mean.shape, generator=gen) * (0.5 * logvar).exp()
        recon = vae.decoder(vae.post_quant_conv(z))
        kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
        loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"vae {step}/{steps} loss {loss.item():.4f} kl {kl.item():.2f}", start)
    return vae.eval()


@torch.no_grad()
def encode_all(vae, images: torch.Tensor) -> torch.Tensor:
    means = []
    for chunk in images.split(50):
        mean, _ = vae.quant_conv(vae.encoder(chunk)).chunk(2, 1)
        means.append(mean)
    return torch.cat(means)


@torch.no_grad()
def normalise_latents(vae, latents: torch.Tensor) -> torch.Tensor:
    """Fold a per-channel affine map into quant_conv / post_quant_conv so that the latents ComfyUI samples
    (``latent * 0.18215``) have zero mean and unit variance per channel; the decoded images do not change."""
    m = latents.mean(dim=(0, 2, 3))
    s = latents.std(dim=(0, 2, 3))
    a = 1 / (s * SCALE_FACTOR)
    b = -m * a
    qw, qb = vae.quant_conv.weight, vae.quant_conv.bias
    pw, pb = vae.post_quant_conv.weight, vae.post_quant_conv.bias
    pb += (pw[:, :, 0, 0] @ m)
    pw /= a[None, :, None, None]
    qw[:4] *= a[:, None, None, None]
    qb[:4] = qb[:4] * a + b
    qb[4:] += 2 * torch.log(a)
    return (latents - m[None, :, None, None]) * a[None, :, None, None]


def keep_saved_tensors():
    """Autograd keeps copies of what it saves: ComfyUI's UNet adds in place (``x += n`` in its transformer
    blocks, ``h += ctrl`` for control), which is fine for inference but would overwrite tensors the backward
    pass needs."""
    return torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t)


def ema_update(ema, model, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)


def train_unet(latents: torch.Tensor, contexts: torch.Tensor, empty: torch.Tensor, steps: int,
               gen: torch.Generator, start: float):
    """Epsilon prediction on SD's discrete schedule; returns the EMA UNet (ComfyUI's openaimodel)."""
    model = demo_models.build_sd15()
    unet = model.diffusion_model
    unet.train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=UNET_LR, weight_decay=0.0)
    ac = alphas_cumprod()
    n = latents.shape[0]
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, UNET_LR)
        idx = torch.randint(0, n, (UNET_BATCH,), generator=gen)
        z0 = latents[idx] * SCALE_FACTOR
        ctx = contexts[idx].clone()
        drop = torch.rand(UNET_BATCH, generator=gen) < 0.1
        ctx[drop] = empty
        t = torch.randint(0, 1000, (UNET_BATCH,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        with keep_saved_tensors():
            loss = F.mse_loss(unet(xt, t.float(), context=ctx), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        # The warm-up keeps the first, untrained weights from lingering in the average.
        ema_update(ema, unet, min(EMA_DECAY, (1 + step) / (10 + step)))
        if step % 100 == 0 or step == steps - 1:
            log(f"unet {step}/{steps} loss {loss.item():.4f}", start)
    return ema


def controlnet_from_unet(unet):
    """The pack's ControlNet with the UNet's encoder copied in; zero convolutions and the hint embedding's last
    convolution start at zero (the ControlNet paper's initialisation)."""
    import_pack()
    from cnr_pack.controlnet_core import ControlNet
    net = ControlNet(demo_models.controlnet_config())
    unet_state = unet.state_dict()
    own = net.state_dict()
    copied = {k: unet_state[k] for k in own if k in unet_state and unet_state[k].shape == own[k].shape}
    missing = [k for k in own if k not in copied and not k.startswith(("zero_convs", "middle_block_out",
                                                                       "input_hint_block"))]
    if missing:
        raise RuntimeError(f"ControlNet keys not found in the UNet: {missing[:5]}")
    net.load_state_dict(copied, strict=False)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.startswith(("zero_convs", "middle_block_out")) or name.startswith(
                    f"input_hint_block.{len(net.input_hint_block) - 1}."):
                p.zero_()
    return net


def control_dict(residuals):
    """ComfyUI's ``control`` argument of the UNet: skip residuals shallow to deep (it pops from the end)."""
    return {"output": list(residuals.output), "middle": list(residuals.middle)}


def train_controlnet(unet, latents, contexts, empty, hints, steps: int, gen: torch.Generator, start: float):
    net = controlnet_from_unet(unet)
    net.train()
    unet.eval().requires_grad_(False)
    params = list(net.parameters())
    opt = torch.optim.AdamW(params, lr=CN_LR, weight_decay=0.0)
    ac = alphas_cumprod()
    n = latents.shape[0]
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, CN_LR)
        idx = torch.randint(0, n, (CN_BATCH,), generator=gen)
        z0 = latents[idx] * SCALE_FACTOR
        ctx = contexts[idx].clone()
        drop = torch.rand(CN_BATCH, generator=gen) < 0.5
        ctx[drop] = empty
        # Uniform timesteps, as the sampler's "normal" schedule visits them; the weights do the emphasis.
        t = torch.randint(0, 1000, (CN_BATCH,), generator=gen)
        eps = torch.randn(z0.shape, generator=gen)
        a = ac[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * z0 + (1 - a).sqrt() * eps
        weights = control_loss_weights(t, ac)
        with keep_saved_tensors():
            residuals = net(xt, t.float(), ctx, hints[idx].float())
            pred = unet(xt, t.float(), context=ctx, control=control_dict(residuals))
            loss = (weights * (pred - eps).pow(2).mean(dim=(1, 2, 3))).sum() / weights.sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, GRAD_CLIP)
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"controlnet {step}/{steps} loss {loss.item():.4f}", start)
    net.eval()
    # How much the control helps: the same noised latents with and without it, at a middle and a noisy step.
    with torch.no_grad():
        idx = torch.arange(min(64, n))
        z0 = latents[idx] * SCALE_FACTOR
        for step_t in (600, 900):
            g = torch.Generator().manual_seed(1)
            t = torch.full((len(idx),), step_t)
            eps = torch.randn(z0.shape, generator=g)
            a = ac[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * z0 + (1 - a).sqrt() * eps
            plain = F.mse_loss(unet(xt, t.float(), context=contexts[idx]), eps).item()
            res = net(xt, t.float(), contexts[idx], hints[idx].float())
            guided = F.mse_loss(unet(xt, t.float(), context=contexts[idx], control=control_dict(res)), eps).item()
            log(f"eps loss at t={step_t} without control {plain:.4f}, with control {guided:.4f}", start)
    return net


def fp16(state: dict) -> dict:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}


def metadata(args, start: float) -> dict:
    return {"unet_config": json.dumps(demo_models.UNET_CONFIG), "vae_ddconfig": json.dumps(demo_models.VAE_DDCONFIG),
            "trained_by": "tools/train_demo_models.py", "seed": str(SEED), "scale": str(args.scale),
            "minutes": f"{(time.perf_counter() - start) / 60:.1f}", "threads": str(args.threads)}


def shipped_models(path: Path):
    """``(unet, vae)`` from the fp16 checkpoint as written, in float32: what the ControlNet trains against."""
    from safetensors.torch import load_file
    unet_state, vae_state = demo_models.split_checkpoint(load_file(str(path)))
    unet = demo_models.build_sd15({k: v.float() for k, v in unet_state.items()}).diffusion_model
    vae = demo_models.build_vae_model({k: v.float() for k, v in vae_state.items()})
    return unet.eval(), vae.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(demo_models.MODELS_DIR), help="folder for the weights")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (pilot runs)")
    parser.add_argument("--scenes", type=int, default=N_SCENES, help="size of the procedural data set")
    parser.add_argument("--only-controlnet", action="store_true",
                        help="train only the ControlNet, against the checkpoint already in --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    # PyTorch's attention kernel, not ComfyUI's CPU default (sub-quadratic chunks, several times slower here).
    sys.path.insert(0, str(comfyui_root()))
    import comfy.cli_args
    comfy.cli_args.args.use_pytorch_cross_attention = True
    boot()
    from safetensors.torch import save_file
    size = demo_models.IMAGE_SIZE
    pictures, captions = scenes.dataset(args.scenes, SEED, size)
    images01 = torch.from_numpy(pictures).float() / 255
    hints = scenes.edge_map(images01).movedim(-1, 1).to(torch.float16)
    images = images01.movedim(-1, 1) * 2 - 1
    del images01
    contexts = torch.cat([demo_models.encode_words(" ".join(c)) for c in captions])
    empty = demo_models.encode_words("")[0]
    log(f"{args.scenes} scenes at {size} px, edge maps, captions e.g. {' '.join(captions[0])!r}", start)
    steps = {k: max(1, round(v * args.scale)) for k, v in
             {"vae": VAE_STEPS, "unet": UNET_STEPS, "cn": CN_STEPS}.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.only_controlnet:
        vae = train_vae(images, steps["vae"], seed_stage(0), start)
        latents = normalise_latents(vae, encode_all(vae, images))
        log(f"latents {tuple(latents.shape)}, scaled std {(latents * SCALE_FACTOR).std().item():.3f}", start)
        with torch.no_grad():
            recon = vae.decoder(vae.post_quant_conv(latents[:16]))
            log(f"vae reconstruction L1 on 16 scenes: {(recon - images[:16]).abs().mean().item():.4f}", start)
        unet = train_unet(latents, contexts, empty, steps["unet"], seed_stage(1), start)
        checkpoint = {**{"model.diffusion_model." + k: v for k, v in unet.state_dict().items()},
                      **{"first_stage_model." + k: v for k, v in vae.state_dict().items()}}
        save_file(fp16(checkpoint), str(out / demo_models.CHECKPOINT), metadata=metadata(args, start))
        log(f"wrote {out / demo_models.CHECKPOINT}", start)
        del unet, vae, latents
    unet, vae = shipped_models(out / demo_models.CHECKPOINT)
    latents = encode_all(vae, images)
    net = train_controlnet(unet, latents, contexts, empty, hints, steps["cn"], seed_stage(2), start)
    save_file(fp16(net.state_dict()), str(out / demo_models.CONTROLNET), metadata=metadata(args, start))
    log(f"wrote {out / demo_models.CONTROLNET} ({(time.perf_counter() - start) / 60:.1f} min in all)", start)


if __name__ == "__main__":
    main()
