"""The ComfyUI side of residual injection: a UNet function wrapper on a cloned ModelPatcher.

Once per model call the wrapper computes the ControlNet's residuals from the same scaled input
and timestep the UNet sees, and merges them into ``c["control"]``, the dict ComfyUI's UNet adds to
its skip connections (``output``) and after its middle block (``middle``). Residuals from
ComfyUI's own ControlNets already in that dict are kept and added to.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import torch
from torch import Tensor

import comfy.model_management

from ..controlnet_core.hint import resize_hint
from ..controlnet_core.injection import weight_residuals
from ..controlnet_core.model import ControlNet
from ..controlnet_core.residuals import ControlResiduals, merge_control, scatter_residuals, tile_rows
from ..controlnet_core.window import active_at_sigma, active_at_step, step_index
from .validation import check_broadcast

LOG = logging.getLogger("ControlNetRefine")
NODE = "CNR_ApplyControlResiduals"


@dataclass
class LoadedControlNet:
    """What ``CNR_CONTROLNET`` carries: the core module and the ModelPatcher that moves it."""

    net: ControlNet
    patcher: object
    name: str


class ResidualInjection:
    """UNet function wrapper adding one ControlNet's residuals (see the module docstring).

    Args:
        control: the loaded ControlNet.
        hint: control image :math:`(N, 3, H, W)` in 0..1 on the CPU.
        scales: multiplier per residual (down, then mid).
        uncond_multiplier: multiplier for uncond rows (0 = cond rows only).
        mask: where the control acts, :math:`(N, 1, H, W)`, or None.
        start, end: the window, as fractions.
        timing: ``executed_steps`` or ``model_sigma``.
        sigma_start, sigma_end: the window as model sigmas (for ``model_sigma``).
        model_sampling: the model's sampling object (input scaling, sigma to timestep).
        resize_mode: how the hint fits the latent grid.
        previous: a wrapper already on the model, called after this one.
    """

    def __init__(self, control: LoadedControlNet, hint: Tensor, scales: Sequence[float], uncond_multiplier: float,
                 mask: Optional[Tensor], start: float, end: float, timing: str, sigma_start: float,
                 sigma_end: float, model_sampling, resize_mode: str, previous: Optional[Callable] = None) -> None:
        self.control = control
        self.hint = hint
        self.scales = tuple(scales)
        self.uncond_multiplier = uncond_multiplier
        self.mask = mask
        self.start, self.end, self.timing = start, end, timing
        self.sigma_start, self.sigma_end = sigma_start, sigma_end
        self.model_sampling = model_sampling
        self.resize_mode = resize_mode
        self.previous = previous
        self._hint_cache = None  # (key, hint, embedding) at the last latent size: resized and embedded once
        self._warned_timing = False

    def __deepcopy__(self, memo: dict) -> "ResidualInjection":
        # ModelPatcher.clone() deep-copies model_options; the weights, hint and sampling object are
        # shared read-only, so only the chain of wrappers needs copying.
        new = copy.copy(self)
        new.previous = copy.deepcopy(self.previous, memo)
        return new

    def __call__(self, apply_model: Callable, args: dict) -> Tensor:
        c = args["c"]
        if self.is_active(float(args["timestep"].flatten()[0]), c.get("transformer_options", {})):
            residuals = self.residuals(args["input"], args["timestep"], c, args["cond_or_uncond"])
            if residuals is not None:
                c = dict(c, control=merge_control(c.get("control"), residuals))
                args = dict(args, c=c)
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **c)

    def is_active(self, sigma: float, transformer_options: dict) -> bool:
        if self.start <= 0.0 and self.end >= 1.0:
            return True
        if self.timing == "executed_steps":
            sample_sigmas = transformer_options.get("sample_sigmas")
            if sample_sigmas is not None:
                index = step_index(sigma, sample_sigmas.tolist())
                return index is not None and active_at_step(index, len(sample_sigmas) - 1, self.start, self.end)
            if not self._warned_timing:
                LOG.warning("CNR_ApplyControlResiduals: this ComfyUI does not report the sampling schedule "
                            "(transformer_options['sample_sigmas']); using model-sigma window timing instead")
                self._warned_timing = True
        return active_at_sigma(sigma, self.sigma_start, self.sigma_end)

    def row_scales(self, batch: int, cond_or_uncond: Sequence[int]) -> Tensor:
        per_chunk = batch // len(cond_or_uncond)
        values = [1.0 if kind == 0 else self.uncond_multiplier for kind in cond_or_uncond]
        return torch.tensor(values, dtype=torch.float32).repeat_interleave(per_chunk)

    def hint_for(self, x: Tensor, net: ControlNet):
        """The hint resized to ``x``'s grid and its embedding, computed once per size and device."""
        size = (x.shape[-2] * net.hint_downscale, x.shape[-1] * net.hint_downscale)
        key = (size, x.device, next(net.parameters()).dtype)
        if self._hint_cache is None or self._hint_cache[0] != key:
            hint = resize_hint(self.hint, size, self.resize_mode).to(x.device)
            self._hint_cache = (key, hint, net.embed_hint(hint))
        return self._hint_cache[1], self._hint_cache[2]

    def ensure_loaded(self, device: torch.device) -> ControlNet:
        net = self.control.net
        if next(net.parameters()).device != device:
            # Hosts without ModelPatcher.additional_models (ComfyUI before 2024-12) load it here.
            comfy.model_management.load_models_gpu([self.control.patcher])
        return net

    def residuals(self, x: Tensor, sigma: Tensor, c: dict, cond_or_uncond: Sequence[int]) -> Optional[ControlResiduals]:
        row_scale = self.row_scales(x.shape[0], cond_or_uncond)
        rows = torch.nonzero(row_scale).flatten()
        if rows.numel() == 0 or not any(self.scales):
            return None
        per_chunk, chunks = x.shape[0] // len(cond_or_uncond), len(cond_or_uncond)
        net = self.ensure_loaded(x.device)
        x_in = self.model_sampling.calculate_input(sigma, x)
        timesteps = self.model_sampling.timestep(sigma).float()
        context = c.get("crossattn_controlnet", c["c_crossattn"])
        y = c.get("y") if net.config.adm_in_channels is not None else None
        # The latent batch is first known here; the Apply node has checked everything else.
        check_broadcast(NODE, "image", self.hint.shape[0], "the latent", per_chunk)
        if self.mask is not None:
            check_broadcast(NODE, "mask", self.mask.shape[0], "the latent", per_chunk)
        hint, embedding = self.hint_for(x, net)
        embedding = tile_rows(embedding, per_chunk, chunks, "control image")
        subset = rows.numel() < x.shape[0]
        pick = (lambda t: t[rows.to(t.device)]) if subset else (lambda t: t)
        # With the embedding given, the forward only checks the hint's size: one row is enough.
        res = net(pick(x_in), pick(timesteps.expand(x.shape[0])), pick(context), hint[:1],
                  None if y is None else pick(y), hint_embedding=pick(embedding))
        mask = None if self.mask is None else pick(tile_rows(self.mask.to(x.device), per_chunk, chunks, "mask"))
        res = weight_residuals(res, self.scales, row_scale[rows], mask, inplace=True)
        if subset:
            res = scatter_residuals(res, rows, x.shape[0])
        return res.map(lambda t: t.to(x.dtype))


