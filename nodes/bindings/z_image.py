"""Binder of the Z-Image Fun ControlNets, and the Z-Image forward that runs them.

ComfyUI's Z-Image model (``comfy/ldm/lumina/model.py`` ``NextDiT``) takes no ``control`` input. Newer ComfyUI
calls patches after each noise-refiner block and main layer (``set_model_noise_refiner_patch`` /
``set_model_double_block_patch``): the Apply node's clone gets the two patches of :mod:`.z_image_patches`.
ComfyUI 0.3.75 has no such hooks: the clone gets a diffusion-model wrapper (``WrappersMP.DIFFUSION_MODEL``)
that, when the sampler wrapper has staged Z-Image controls for the call, runs the model's own submodules in
the model's order (timestep and caption embedders, patch embedder with pad tokens, caption refiner, noise
refiner, main layers, final layer) and calls the same two patches where newer builds call them. With nothing
staged it calls the model as it is. Either way everything lives in the clone's options: nothing of ComfyUI's
is changed or replaced, and the shared diffusion model carries nothing after sampling.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ...controlnet_core.families.z_image.hint import control_context, masked_image
from ...controlnet_core.families.z_image.model import PATCH, position_ids
from ...controlnet_core.injection.hint import resize_hint
from .. import compat
from ..base import NodeInputError
from ..control import LoadedControlNet
from .binding import STAGED_KEY, FamilyBinding, encode_with_vae
from .transformer import check_transformer_fits, hint_vae_of, uniform_rule, with_rotary_split
from .z_image_patches import after_main_layer, after_refiner_block

__all__ = ["WRAPPER_KEY", "bind_z_image", "controlled_forward", "install_forward", "install_patches",
           "run_staged_controls"]

WRAPPER_KEY = "cnr_z_image_control"
"""Key of the diffusion-model wrapper on the Apply node's clone (one, however many controls are stacked)."""


def bind_z_image(model, control: LoadedControlNet, node_id: str) -> FamilyBinding:
    """A Z-Image Fun ControlNet on a Z-Image MODEL: control context from the hint VAE, run by the forward below."""
    check_transformer_fits(model, control, node_id)
    vae = hint_vae_of(control, node_id)
    dm = model.model.diffusion_model
    if compat.has_z_image_patches(model):
        install = install_patches
    elif compat.composable_z_image(dm):
        install = install_forward
    else:
        raise NodeInputError(node_id, "model", "this ComfyUI's Z-Image model has neither per-layer patches nor the "
                                               "forward the pack restates (ComfyUI 0.3.75's NextDiT); use ComfyUI's "
                                               "ModelPatchLoader and ZImageFunControlnet nodes on this ComfyUI")
    _check_inpaint(control, node_id)
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
        latent = encode(image)
        mask, inpaint = _inpaint_parts(control, image.shape[-2:], node_id)
        return control_context(cfg.hint_channels, cfg.in_channels, tuple(latent.shape[-2:]), image.shape[0],
                               control=latent, mask=mask,
                               inpaint=None if inpaint is None else encode(masked_image(inpaint, mask)))

    return FamilyBinding(
        control=control,
        scales_rule=uniform_rule(control.net.num_residuals),
        input_popped=False,
        encode_hint=encode_hint,
        patch=PATCH,
        attention=compat.attention_kernel(),
        install=install,
    )


def _check_inpaint(control: LoadedControlNet, node_id: str) -> None:
    """Raise unless the control's inpaint parts are none, a mask, or a mask and an image, for a 2.x file."""
    if control.inpaint_image is not None and control.inpaint_mask is None:
        raise NodeInputError(node_id, "controlnet", f"'{control.name}' carries an inpaint image but no inpaint mask; "
                                                    "give the mask of the region to repaint")
    if control.inpaint_mask is not None and not control.net.config.takes_inpaint:
        raise NodeInputError(node_id, "controlnet", f"'{control.name}' is a Z-Image Fun 1.0 ControlNet, which takes "
                                                    "no inpaint mask; use a 2.1 file")


def _inpaint_parts(control: LoadedControlNet, size, node_id: str) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """The inpaint mask :math:`(B, 1, H, W)` and image :math:`(B, 3, H, W)` at the control image's size."""
    _check_inpaint(control, node_id)
    mask, image = control.inpaint_mask, control.inpaint_image
    if mask is None:
        return None, None
    mask = resize_hint(mask.float().reshape(-1, 1, *mask.shape[-2:]), tuple(size), "stretch")
    return mask, None if image is None else resize_hint(image.float(), tuple(size), "stretch")


def install_forward(model) -> None:
    """Give the Apply node's clone the diffusion-model wrapper that runs staged Z-Image controls (once)."""
    compat.add_diffusion_model_wrapper(model, WRAPPER_KEY, run_staged_controls)


def install_patches(model) -> None:
    """Give the Apply node's clone the Z-Image patches that run staged controls (once), on builds with hooks."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {})
    if after_refiner_block not in patches.get("noise_refiner", []):
        model.set_model_noise_refiner_patch(after_refiner_block)
        model.set_model_double_block_patch(after_main_layer)


def run_staged_controls(executor, x, timesteps, context, num_tokens, attention_mask=None, **kwargs):
    """The diffusion-model wrapper: the model as it is, or :func:`controlled_forward` when controls are staged."""
    options = kwargs.get("transformer_options", {})
    if not options.get(STAGED_KEY):
        return executor(x, timesteps, context, num_tokens, attention_mask, **kwargs)
    return controlled_forward(executor.class_obj, x, timesteps, context, attention_mask, options)


def controlled_forward(dm, x: Tensor, timesteps: Tensor, context: Tensor, attention_mask: Optional[Tensor] = None,
                       transformer_options: Optional[dict] = None) -> Tensor:
    r"""ComfyUI 0.3.75's Z-Image forward (``NextDiT._forward``) restated, calling the Z-Image patches where newer
    ComfyUI calls them (:mod:`.z_image_patches`), with the call's staged controls.

    Follows the model's own forward step for step, so with no control (or skips of 0) it returns what the
    model returns.

    Args:
        dm: ComfyUI's ``NextDiT``.
        x: latent :math:`(B, C, H, W)`.
        timesteps: :math:`(B,)` as the model takes them (1 = noise).
        context: caption features :math:`(B, T, C_t)`.
        attention_mask: the caption mask, or None.
        transformer_options: the call's options, with the staged controls under ``STAGED_KEY``; the patches
            keep their per-call state in a copy.

    Returns:
        The model output :math:`(B, C, H, W)`.
    """
    options = dict(transformer_options or {})
    height, width = x.shape[-2:]
    x = _pad_to_patches(x, dm.patch_size)
    adaln = dm.t_embedder((1.0 - timesteps) * dm.time_scale, dtype=x.dtype)
    cap = dm.cap_embedder(context)
    cap, tokens, cap_ids, img_ids = _embed(dm, x, cap, options)
    freqs = dm.rope_embedder(torch.cat((cap_ids, img_ids), dim=1)).movedim(1, 2)
    n_cap = cap.shape[1]
    for layer in dm.context_refiner:
        cap = layer(cap, attention_mask, freqs[:, :n_cap], transformer_options=options)

    x0 = tokens
    for i, layer in enumerate(dm.noise_refiner):
        tokens = layer(tokens, None, freqs[:, n_cap:], adaln, transformer_options=options)
        out = after_refiner_block({"img": tokens, "img_input": x0, "txt": cap, "pe": freqs[:, n_cap:], "vec": adaln,
                                   "x": x, "block_index": i, "transformer_options": options})
        tokens = out.get("img", tokens)

    unified = torch.cat((cap, tokens), dim=1)
    start = unified
    for i, layer in enumerate(dm.layers):
        unified = layer(unified, None, freqs, adaln, transformer_options=options)
        out = after_main_layer({"img": unified[:, n_cap:], "img_input": start[:, n_cap:], "txt": unified[:, :n_cap],
                                "pe": freqs[:, n_cap:], "vec": adaln, "x": x, "block_index": i,
                                "transformer_options": options})
        if out:
            unified = torch.cat((out["txt"], out["img"]), dim=1)

    out = dm.final_layer(unified, adaln)
    out = dm.unpatchify(out, [x.shape[-2:]] * x.shape[0], [n_cap] * x.shape[0], return_tensor=True)
    return -out[:, :, :height, :width]


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
        ``(cap, tokens, cap_ids, img_ids)``: :math:`(B, L_c, D)`, :math:`(B, L_x, D)` and their positions
        :math:`(B, L_c, 3)` and :math:`(B, L_x, 3)`.
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
    return cap, tokens, cap_ids.expand(b, -1, -1), img_ids.expand(b, -1, -1)
