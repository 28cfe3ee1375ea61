"""Binder of the Z-Image Fun ControlNets, and the Z-Image forward that runs them.

ComfyUI's Z-Image model (``comfy/ldm/lumina/model.py`` ``NextDiT``) takes no ``control`` input, and ComfyUI
0.3.75 has no per-layer patch hooks in it. So the Apply node's clone of the MODEL gets a diffusion-model
wrapper (``WrappersMP.DIFFUSION_MODEL``, in the clone's options only) that, when the sampler wrapper has
staged Z-Image controls for the call, runs the model's own submodules in the model's order (timestep and
caption embedders, patch embedder with pad tokens, caption refiner, noise refiner, main layers, final layer)
and adds each control's skips after the noise-refiner blocks and after the main layers, as the authors'
reference does. With nothing staged it calls the model as it is. Nothing of ComfyUI's is changed or
replaced; the shared diffusion model carries nothing after sampling.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from ...controlnet_core.families.z_image.hint import control_context, masked_image
from ...controlnet_core.families.z_image.model import PATCH, position_ids, sequence_weights
from ...controlnet_core.injection.hint import resize_hint
from ...controlnet_core.layers.attention import AttentionFn, scaled_dot_product
from ...controlnet_core.layers.rotary import rope_frequencies
from .. import compat
from ..base import NodeInputError
from ..control import LoadedControlNet
from .binding import STAGED_KEY, FamilyBinding, StagedControl, encode_with_vae
from .transformer import check_transformer_fits, hint_vae_of, uniform_rule, with_rotary_split

__all__ = ["WRAPPER_KEY", "bind_z_image", "controlled_forward", "install_forward", "run_staged_controls"]

WRAPPER_KEY = "cnr_z_image_control"
"""Key of the diffusion-model wrapper on the Apply node's clone (one, however many controls are stacked)."""


def bind_z_image(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Z-Image Fun ControlNet on a Z-Image MODEL: control context from the hint VAE, run by the forward below."""
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    dm = model.model.diffusion_model
    if not compat.composable_z_image(dm):
        raise NodeInputError(node_id, "model", "this ComfyUI's Z-Image model is not the one the pack runs Z-Image "
                                               "Fun ControlNets on (ComfyUI 0.3.75's NextDiT); use ComfyUI's "
                                               "ModelPatchLoader and ZImageFunControlnet nodes on this ComfyUI")
    cfg = control.net.config
    if cfg.places[-1] >= len(dm.layers) or cfg.refiner_skips > len(dm.noise_refiner):
        raise NodeInputError(node_id, "controlnet",
                             f"'{control.name}' adds skips after main layers up to {cfg.places[-1]} and noise-refiner "
                             f"blocks up to {cfg.refiner_skips - 1}, but the model has {len(dm.layers)} and "
                             f"{len(dm.noise_refiner)}; load a ControlNet made for this model")
    control = with_rotary_split(control, tuple(int(a) for a in dm.rope_embedder.axes_dim))
    latent_format = model.model.latent_format

    def encode(image: Tensor) -> Tensor:
        return latent_format.process_in(encode_with_vae(vae, image))

    def encode_hint(image: Tensor) -> Tensor:
        size = (image.shape[-2] // 8, image.shape[-1] // 8)
        mask, inpaint = _inpaint_parts(control, image.shape[-2:], node_id)
        return control_context(cfg.hint_channels, cfg.in_channels, size, image.shape[0],
                               control=encode(image), mask=mask,
                               inpaint=None if inpaint is None else encode(masked_image(inpaint, mask)))

    return FamilyBinding(
        control=control,
        scales_rule=uniform_rule(control.net.num_residuals),
        input_popped=False,
        encode_hint=encode_hint,
        patch=PATCH,
        attention=compat.attention_kernel(),
        install=install_forward,
    )


def _inpaint_parts(control: LoadedControlNet, size, node_id: str) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The inpaint mask :math:`(B, 1, H, W)` and image :math:`(B, 3, H, W)` at the control image's size."""
    mask, image = control.inpaint_mask, control.inpaint_image
    if image is not None and mask is None:
        raise NodeInputError(node_id, "controlnet", f"'{control.name}' carries an inpaint image but no inpaint mask; "
                                                    "give the mask of the region to repaint")
    if mask is None:
        return None, None
    if not control.net.config.takes_inpaint:
        raise NodeInputError(node_id, "controlnet", f"'{control.name}' is a Z-Image Fun 1.0 ControlNet, which takes "
                                                    "no inpaint mask; use a 2.1 file")
    mask = resize_hint(mask.float().reshape(-1, 1, *mask.shape[-2:]), tuple(size), "stretch")
    return mask, None if image is None else resize_hint(image.float(), tuple(size), "stretch")


def install_forward(model) -> None:
    """Give the Apply node's clone the diffusion-model wrapper that runs staged Z-Image controls (once)."""
    compat.add_diffusion_model_wrapper(model, WRAPPER_KEY, run_staged_controls)


def run_staged_controls(executor, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
    """The diffusion-model wrapper: the model as it is, or :func:`controlled_forward` when controls are staged."""
    staged = kwargs.get("transformer_options", {}).get(STAGED_KEY, ())
    if not staged:
        return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)
    return controlled_forward(executor.class_obj, staged, x, timesteps, context, attention_mask,
                              kwargs.get("transformer_options", {}))


def controlled_forward(dm, staged: Sequence[StagedControl], x: Tensor, timesteps: Tensor, context: Tensor,
                       attention_mask: Optional[Tensor] = None, transformer_options: Optional[dict] = None) -> Tensor:
    r"""ComfyUI's Z-Image forward (NextDiT of 0.3.75) with the staged controls' skips added.

    Follows the model's own forward step for step, so with no control (or skips of 0) it returns what the
    model returns.

    Args:
        dm: ComfyUI's ``NextDiT``.
        staged: the controls of this call (may be empty).
        x: latent :math:`(B, C, H, W)`; timesteps :math:`(B,)` as the model takes them (1 = noise);
            context: caption features :math:`(B, T, C_t)`; attention_mask: the caption mask, or None.
        transformer_options: the call's options (rotary scaling, attention overrides).

    Returns:
        The model output :math:`(B, C, H, W)`.
    """
    options = transformer_options or {}
    height, width = x.shape[-2:]
    x = _pad_to_patches(x, dm.patch_size)
    adaln = dm.t_embedder((1.0 - timesteps) * dm.time_scale, dtype=x.dtype)
    cap = dm.cap_embedder(context)
    cap, tokens, cap_ids, img_ids, grid = _embed(dm, x, cap, options)
    freqs = dm.rope_embedder(torch.cat((cap_ids, img_ids), dim=1)).movedim(1, 2)
    n_cap, n_img = cap.shape[1], tokens.shape[1]
    for layer in dm.context_refiner:
        cap = layer(cap, attention_mask, freqs[:, :n_cap], transformer_options=options)

    axes, theta = tuple(dm.rope_embedder.axes_dim), dm.rope_embedder.theta
    img_rope = rope_frequencies(img_ids[0], axes, theta)
    unified_rope = rope_frequencies(torch.cat((cap_ids[0], img_ids[0])), axes, theta)
    image = slice(n_cap, n_cap + n_img)
    streams, weights = [], []
    for job in staged:
        rows = job.rows
        net = job.net
        weights.append(sequence_weights(job.row_scale, n_cap + n_img, image, job.token_weights).to(x.dtype))
        start = net.stream_start(job.embedding.to(x.dtype), dm.x_pad_token, n_img)
        streams.append(net.refine(start, tokens[rows], img_rope, adaln[rows], _kernel(job)))

    for i, layer in enumerate(dm.noise_refiner):
        tokens = layer(tokens, None, freqs[:, n_cap:], adaln, transformer_options=options)
        for job, (_, skips), weight in zip(staged, streams, weights):
            if i < len(skips):
                add = skips[i].to(tokens.dtype) * (weight[:, image] * job.scales[i])
                tokens = tokens.index_add(0, job.rows, add)

    unified = torch.cat((cap, tokens), dim=1)
    layer_skips = [iter(job.net.layer_skips(c, unified[job.rows], image, unified_rope, adaln[job.rows], _kernel(job)))
                   for job, (c, _) in zip(staged, streams)]
    places = [{place: k for k, place in enumerate(job.net.config.places)} for job in staged]
    for i, layer in enumerate(dm.layers):
        unified = layer(unified, None, freqs, adaln, transformer_options=options)
        for job, skips, where, weight in zip(staged, layer_skips, places, weights):
            if i in where:
                scale = job.scales[job.net.config.refiner_skips + where[i]]
                unified = unified.index_add(0, job.rows, next(skips).to(unified.dtype) * (weight * scale))

    out = dm.final_layer(unified, adaln)
    out = dm.unpatchify(out, [x.shape[-2:]] * x.shape[0], [n_cap] * x.shape[0], return_tensor=True)
    return -out[:, :, :height, :width]


def _kernel(job: StagedControl) -> AttentionFn:
    return job.attention or scaled_dot_product


def _pad_to_patches(x: Tensor, patch: int) -> Tensor:
    pad_h, pad_w = (-x.shape[-2]) % patch, (-x.shape[-1]) % patch
    return torch.nn.functional.pad(x, (0, pad_w, 0, pad_h), mode="circular") if pad_h or pad_w else x


def _padded(tokens: Tensor, pad_token: Tensor, multiple: Optional[int]) -> Tensor:
    if multiple is None:
        return tokens
    missing = (-tokens.shape[1]) % multiple
    pad = pad_token.to(device=tokens.device, dtype=tokens.dtype).reshape(1, 1, -1)
    return torch.cat((tokens, pad.expand(tokens.shape[0], missing, -1)), dim=1)


def _embed(dm, x: Tensor, cap: Tensor, options: dict):
    """Caption and image tokens with their pad tokens and rotary positions, as the model's patch step makes them.

    Returns:
        ``(cap, tokens, cap_ids, img_ids, grid)``: :math:`(B, L_c, D)`, :math:`(B, L_x, D)`, positions
        :math:`(B, L_c, 3)` and :math:`(B, L_x, 3)`, and the token grid.
    """
    multiple = dm.pad_tokens_multiple
    cap = _padded(cap, dm.cap_pad_token if multiple else None, multiple)
    b, c, h, w = x.shape
    p = dm.patch_size
    grid = (h // p, w // p)
    tokens = dm.x_embedder(x.reshape(b, c, grid[0], p, grid[1], p).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, p * p * c))
    rope = options.get("rope_options") or {}
    n_img = tokens.shape[1]
    tokens = _padded(tokens, dm.x_pad_token if multiple else None, multiple)
    cap_ids, img_ids = position_ids(cap.shape[1], grid, tokens.shape[1], device=x.device)
    rows = torch.arange(grid[0], device=x.device, dtype=torch.float32)
    cols = torch.arange(grid[1], device=x.device, dtype=torch.float32)
    img_ids[:n_img, 1] = (rows * rope.get("scale_y", 1.0) + rope.get("shift_y", 0.0)).repeat_interleave(grid[1])
    img_ids[:n_img, 2] = (cols * rope.get("scale_x", 1.0) + rope.get("shift_x", 0.0)).repeat(grid[0])
    return cap, tokens, cap_ids.expand(b, -1, -1), img_ids.expand(b, -1, -1), grid
