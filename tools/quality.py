"""Quality measures for the trained demo models, and the graphs that produce the images they measure.

Every image goes through ComfyUI's own nodes and sampler and the pack's nodes (``comfy_host.run_node``):
CLIPTextEncode, CNR_ControlNetLoader, CNR_ApplyControlResiduals, EmptyLatentImage / VAEEncode, KSampler,
VAEDecode. Used by ``bench/bench_quality.py`` and ``tests/e2e/test_demo_models.py``.

Measures (images ``(B, H, W, 3)`` in 0..1, as ComfyUI's IMAGE):

- :func:`edge_f1`: F1 between a control edge map and the Canny edges of an output, matched within a few pixels;
- :func:`psnr` / :func:`ssim`: kornia's, against a reference image;
- :func:`outside_mask_error` and :func:`seam_step`: for inpainting, how far pixels outside the mask moved and
  how large the step across the mask border is.
"""
from functools import lru_cache

import torch
import torch.nn.functional as F

import demo_models
import scenes
from comfy_host import boot, init_builtin_extras, run_node

# Canny thresholds for the edges of generated images: lower than the workflows' (0.4, 0.8) on the clean
# control scenes, since decoded images are softer; the same for every setting compared.
OUTPUT_CANNY = (0.15, 0.3)
TOLERANCE_PX = 2
PROMPT = "green hill blue sky yellow sun red house green tree"
NEGATIVE = ""
CONTROL_MODES = {"balanced": "balanced", "prompt": "my prompt is more important",
                 "controlnet": "controlnet is more important"}


def canny(images: torch.Tensor, thresholds=OUTPUT_CANNY) -> torch.Tensor:
    """``(B, H, W)`` booleans: Canny (as the training data's edge maps) on ``(B, H, W, 3)`` images in 0..1."""
    return scenes.canny(images, *thresholds)


def _dilate(edges: torch.Tensor, radius: int) -> torch.Tensor:
    return F.max_pool2d(edges.float()[:, None], 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0.5


def edge_f1(control_edges: torch.Tensor, output: torch.Tensor, tolerance: int = TOLERANCE_PX) -> float:
    """Mean F1 over the batch between ``control_edges`` (an edge map IMAGE, white edges) and the Canny edges
    of ``output``; an edge pixel counts as matched when the other map has one within ``tolerance`` px."""
    target = control_edges[..., 0] > 0.5
    found = canny(output)
    scores = []
    for t, f in zip(target, found):
        if not f.any() or not t.any():
            scores.append(0.0)
            continue
        precision = (f & _dilate(t[None], tolerance)[0]).sum().item() / f.sum().item()
        recall = (t & _dilate(f[None], tolerance)[0]).sum().item() / t.sum().item()
        scores.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return sum(scores) / len(scores)


def psnr(output: torch.Tensor, reference: torch.Tensor) -> float:
    import kornia
    return kornia.metrics.psnr(output.float(), reference.float(), 1.0).item()


def ssim(output: torch.Tensor, reference: torch.Tensor) -> float:
    import kornia
    return kornia.metrics.ssim(output.float().movedim(-1, 1), reference.float().movedim(-1, 1), 7).mean().item()


def outside_mask_error(output: torch.Tensor, reference: torch.Tensor, mask: torch.Tensor) -> float:
    """Largest absolute change (0..1) of any pixel where ``mask`` is 0."""
    keep = (mask < 0.5)[..., None].expand_as(output)
    return (output.float() - reference.float()).abs()[keep].max().item()


def seam_step(image: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute colour step between horizontally or vertically adjacent pixels on opposite sides of the
    mask border (0..1)."""
    inside = mask > 0.5
    steps = []
    for dim in (1, 2):
        a, b = inside.narrow(dim, 0, inside.shape[dim] - 1), inside.narrow(dim, 1, inside.shape[dim] - 1)
        across = a != b
        diff = (image.narrow(dim, 0, image.shape[dim] - 1) - image.narrow(dim, 1, image.shape[dim] - 1)).abs()
        steps.append(diff.mean(-1)[across])
    return torch.cat(steps).float().mean().item()


def control_scenes(n: int, seed: int = 1234):
    """``n`` fixed test scenes (not in the training set's seed) as IMAGE, and their Canny edge maps."""
    pictures, _ = scenes.dataset(n, seed, demo_models.IMAGE_SIZE)
    images = torch.from_numpy(pictures).float() / 255
    return images, scenes.edge_map(images)


@lru_cache(maxsize=None)
def demo_pipeline():
    """``(model, clip, vae, controlnet)``: the trained demo models, the ControlNet through CNR_ControlNetLoader."""
    init_builtin_extras(boot())
    import folder_paths
    folder_paths.add_model_folder_path("controlnet", str(demo_models.MODELS_DIR))
    model, clip, vae = demo_models.load_checkpoint()
    (controlnet,) = run_node("CNR_ControlNetLoader", control_net_name=demo_models.CONTROLNET)
    return model, clip, vae, controlnet


def encode(text: str):
    clip = demo_pipeline()[1]
    return run_node("CLIPTextEncode", clip=clip, text=text)[0]


def generate(control: torch.Tensor, *, strength: float = 1.0, mode: str = "balanced", start: float = 0.0,
             end: float = 1.0, seed: int = 0, steps: int = 12, cfg: float = 5.0, prompt: str = PROMPT,
             image: torch.Tensor = None, denoise: float = 1.0, latent: dict = None,
             controlled: bool = True) -> torch.Tensor:
    """One image per control image through the nodes: txt2img, img2img from ``image`` at ``denoise``, or
    sampling a given ``latent`` (e.g. CNR_InpaintMaskPrep's); ``controlled=False`` samples the plain MODEL."""
    model, _, vae, controlnet = demo_pipeline()
    if controlled:
        (model,) = run_node("CNR_ApplyControlResiduals", model=model, controlnet=controlnet, image=control,
                            strength=strength, start_percent=start, end_percent=end, control_mode=CONTROL_MODES[mode])
    if latent is None and image is None:
        size = demo_models.IMAGE_SIZE
        (latent,) = run_node("EmptyLatentImage", width=size, height=size, batch_size=control.shape[0])
    elif latent is None:
        (latent,) = run_node("VAEEncode", pixels=image, vae=vae)
    (samples,) = run_node("KSampler", model=model, seed=seed, steps=steps, cfg=cfg, sampler_name="euler",
                          scheduler="normal", positive=encode(prompt), negative=encode(NEGATIVE),
                          latent_image=latent, denoise=denoise)
    (decoded,) = run_node("VAEDecode", samples=samples, vae=vae)
    return decoded


def inpaint(image: torch.Tensor, mask: torch.Tensor, control: torch.Tensor, **options):
    """Repaint ``image`` inside ``mask``: CNR_InpaintMaskPrep (noise mask, feathered paste mask), the sampler, then
    ComfyUI's ImageCompositeMasked with the paste mask. Returns ``(result, sample_mask, paste_mask)``."""
    vae = demo_pipeline()[2]
    latent, sample_mask, paste_mask, *_ = run_node("CNR_InpaintMaskPrep", image=image, mask=mask, vae=vae, grow=0,
                                                   feather=6)
    decoded = generate(control, latent=latent, **options)
    (out,) = run_node("ImageCompositeMasked", destination=image, source=decoded, x=0, y=0, resize_source=False,
                      mask=paste_mask)
    return out, sample_mask, paste_mask
