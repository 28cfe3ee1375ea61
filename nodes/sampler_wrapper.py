"""The ComfyUI side of residual injection: a UNet function wrapper on a cloned ModelPatcher.

Once per model call the wrapper computes the control's residuals from the same scaled input and
timestep the UNet sees, and merges them into ``c["control"]``, the dict ComfyUI's UNet adds to its
skip connections (``output``), after its middle block (``middle``) and after its input blocks
(``input``). Residuals of ComfyUI's own ControlNets already in that dict are kept and added to.

One wrapper instance may be shared by every clone of the patched MODEL (newer ComfyUI shares
``model_options`` leaves between clones) and called from several threads, so its only state is a
cache of hint embeddings keyed by device, size and dtype (and, for controls whose residuals do not
depend on the step, such as T2I-Adapters, of the raw residuals per batch layout; with residual reuse,
of the last computation per batch layout), guarded by a lock and emptied when sampling ends.

A control that runs inside the base model's forward (Z-Image) is handed to the model call instead, as a
:class:`~.bindings.binding.StagedControl` in ``transformer_options``, with the same window, keyframe, row, mask
and per-residual weights decided here; with residual reuse it carries the kept skips to add instead, or a list
for the forward to fill with the skips it computes, which the wrapper keeps (same cache, lock and rules).
"""
from __future__ import annotations

import copy
import threading
from dataclasses import replace
from typing import Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..controlnet_core.injection.hint import resize_hint
from ..controlnet_core.injection.keyframes import StepControl
from ..controlnet_core.injection.reuse import ComputedResiduals, should_compute
from ..controlnet_core.injection.window import step_index
from ..controlnet_core.layers.embeddings import per_row
from ..controlnet_core.injection.weighting import mask_tokens, weight_residuals
from ..controlnet_core.residuals import ControlResiduals, merge_control, scatter_residuals, tile_rows
from ..controlnet_core.injection.spec import InjectionSpec
from . import compat
from .base import LOG
from .bindings import FamilyBinding
from .bindings.binding import STAGED_KEY, StagedControl
from .control import LoadedControlNet
from .validation import check_broadcast

NODE_ID = "CNR_ApplyControlResiduals"


class ResidualInjection:
    """UNet function wrapper adding one control's residuals (see the module docstring).

    Args:
        binding: the control bound to this MODEL (the control itself, hint encoding, extra inputs, block
            spreading), from :func:`.bindings.bind`.
        spec: what to add and when.
        model_sampling: the MODEL's sampling object (input scaling, sigma to timestep).
        previous: a wrapper already on the model, called after this one.
    """

    def __init__(self, binding: FamilyBinding, spec: InjectionSpec, model_sampling,
                 previous: Optional[Callable] = None) -> None:
        self._control = binding.control if binding.complete is None else None
        self.spec = spec
        self.binding = binding
        self.model_sampling = model_sampling
        self.previous = previous
        self._lock = threading.Lock()
        self._hints: Dict[torch.device, Tuple[tuple, Tensor, object]] = {}
        self._fixed: Dict[tuple, ControlResiduals] = {}  # step-invariant raw residuals, read-only
        self._computed: Dict[tuple, ComputedResiduals] = {}  # last computation per batch layout (reuse)
        self._weighted: Dict[tuple, tuple] = {}  # (kept raw residuals, row scales, their weighted result)
        self._warned_timing = False

    def __deepcopy__(self, memo: dict) -> "ResidualInjection":
        # ComfyUI before 2025 deep-copies model_options on clone: the weights, spec, cache and lock
        # are shared read-only or lock-guarded, so only the chain of wrappers is copied.
        new = copy.copy(self)
        new.previous = copy.deepcopy(self.previous, memo)
        return new

    @property
    def control(self) -> LoadedControlNet:
        """The control that runs; one completed at sampling start (a Control-LoRA) is completed on first use."""
        if self._control is None:
            with self._lock:
                if self._control is None:
                    self._control = self.binding.complete()
        return self._control

    @property
    def cached_hints(self) -> int:
        """How many hint embeddings the wrapper holds (one per device at most)."""
        return len(self._hints)

    def cleanup(self, *_patcher) -> None:
        """Drop every cached hint embedding; ComfyUI calls it when sampling ends."""
        with self._lock:
            self._hints.clear()
            self._fixed.clear()
            self._computed.clear()
            self._weighted.clear()

    def to(self, device_or_dtype) -> "ResidualInjection":
        """ComfyUI moves model patches with the MODEL; when it leaves a device, its cached hints go too."""
        if isinstance(device_or_dtype, (str, torch.device)):
            device = torch.device(device_or_dtype)
            with self._lock:
                for cached in [d for d in self._hints if d != device]:
                    del self._hints[cached]
                for cache in (self._fixed, self._computed, self._weighted):
                    for key in [k for k in cache if k[0] != device]:
                        del cache[key]
        return self

    def __call__(self, apply_model: Callable, args: dict) -> Tensor:
        c = args["c"]
        sigma = float(args["timestep"].flatten()[0])
        sample_sigmas = self.run_schedule(c.get("transformer_options", {}))
        if self.spec.window.active(sigma, sample_sigmas):
            step = StepControl() if self.spec.schedule is None else self.spec.schedule.at(sigma, sample_sigmas)
            index = None if sample_sigmas is None else step_index(sigma, sample_sigmas)
            if self.binding.install is not None:
                return self._call_staged(apply_model, args, step, index)
            residuals = self.residuals(args["input"], args["timestep"], c, args["cond_or_uncond"], step, index)
            if residuals is not None:
                control = merge_control(c.get("control"), residuals, input_popped=self.binding.input_popped)
                args = dict(args, c=dict(c, control=control))
        elif self._computed:
            with self._lock:  # never reuse residuals across a window edge
                self._computed.clear()
                self._weighted.clear()
        return self._next(apply_model, args)

    def _call_staged(self, apply_model: Callable, args: dict, step: StepControl, index: Optional[int]) -> Tensor:
        """The model call with this control staged in its ``transformer_options``; with residual reuse at a
        computing call, the skips the forward computed are kept once it returns."""
        c = args["c"]
        staged, pending = self.staged(args["input"], args["timestep"], c, args["cond_or_uncond"], step, index)
        if staged is not None:
            options = dict(c.get("transformer_options", {}))
            options[STAGED_KEY] = tuple(options.get(STAGED_KEY, ())) + (staged,)
            args = dict(args, c=dict(c, transformer_options=options))
        out = self._next(apply_model, args)
        if pending is not None and len(staged.keep) == self.control.net.num_residuals:
            # A call that did not run every control layer (the model left some out) keeps nothing.
            with self._lock:
                self._computed[pending[0]] = replace(pending[1], residuals=ControlResiduals(output=tuple(staged.keep)))
        return out

    def _next(self, apply_model: Callable, args: dict) -> Tensor:
        """The model call: through the wrapper already on the model, if any."""
        if self.previous is not None:
            return self.previous(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])

    def run_schedule(self, transformer_options: dict) -> Optional[list]:
        """The run's sigmas as ComfyUI reports them, or None (warned once where the spec needs them)."""
        sample_sigmas = transformer_options.get("sample_sigmas")
        needs = self.spec.window.needs_schedule() or self.spec.schedule is not None or self.spec.reuse.enabled
        if needs and sample_sigmas is None and not self._warned_timing:
            LOG.warning("%s: this ComfyUI does not report the sampling schedule "
                        "(transformer_options['sample_sigmas']); using model-sigma window timing instead "
                        "(keyframes without guarantee_steps or interpolation, no residual reuse)", NODE_ID)
            self._warned_timing = True
        return None if sample_sigmas is None else sample_sigmas.tolist()

    def row_scales(self, batch: int, cond_or_uncond: Sequence[int], step: StepControl = StepControl()) -> Tensor:
        """Multiplier per batch row: uncond multiplier, keyframe strength and per-latent strength.

        ComfyUI batches ``len(cond_or_uncond)`` chunks of the same latents; row ``chunk * per_chunk + j``
        is latent ``j``.
        """
        per_chunk = batch // len(cond_or_uncond)
        values = [1.0 if kind == 0 else self.spec.uncond_multiplier for kind in cond_or_uncond]
        scales = torch.tensor(values, dtype=torch.float32).repeat_interleave(per_chunk)
        if step.strength != 1.0:
            scales = scales * step.strength
        latents = step.latent_factors(per_chunk, self.spec.latent_strengths)
        if latents is not None:
            scales = scales * torch.tensor(latents, dtype=torch.float32).repeat(len(cond_or_uncond))
        return scales

    def hint_for(self, x: Tensor, net: torch.nn.Module) -> Tuple[Tuple[Tensor, ...], object]:
        """The hints (the spec's, then a Union's further ones) resized to ``x``'s grid (VAE-encoded for
        latent-hint models), and their embedding, computed once per device, size and dtype."""
        size = net.hint_size(x.shape[-2], x.shape[-1])
        key = (size, next(net.parameters()).dtype)
        with self._lock:
            cached = self._hints.get(x.device)
        if cached is None or cached[0] != key:
            given = (self.spec.hint, *self.control.extra_hints)
            hints = tuple(resize_hint(h, size, self.spec.resize_mode) for h in given)
            if self.binding.encode_hint is not None:
                # Outside the lock: loading the VAE moves models, and moving the MODEL calls self.to.
                hints = tuple(self.binding.encode_hint(h) for h in hints)
                net = self.ensure_loaded(x.device)  # the VAE may have pushed it off the device
            hints = tuple(h.to(x.device) for h in hints)
            cached = (key, hints, net.embed_hint(_one_or_all(hints), control_type=self._control_type))
            with self._lock:
                self._hints[x.device] = cached
        return cached[1], cached[2]

    @property
    def _control_type(self) -> Optional[Tuple[int, ...]]:
        return self.control.control_type or None

    def ensure_loaded(self, device: torch.device) -> torch.nn.Module:
        net = self.control.net
        if next(net.parameters()).device != device:
            load_device = getattr(self.control.patcher, "load_device", device)
            if torch.device(load_device) != device:
                raise RuntimeError(
                    f"{NODE_ID}: the model runs on {device} but controlnet '{self.control.name}' is loaded for "
                    f"{load_device}; ComfyUI's MultiGPU split is not supported by this pack: sample on one device")
            # Hosts without ModelPatcher.additional_models load it here; a partial (low VRAM) load is completed.
            compat.load_fully(self.control.patcher)
        return net

    def residuals(self, x: Tensor, sigma: Tensor, c: dict, cond_or_uncond: Sequence[int],
                  step: StepControl = StepControl(), index: Optional[int] = None) -> Optional[ControlResiduals]:
        """The weighted residuals of one model call, or None where nothing is added.

        Args:
            x: the latent batch the UNet sees (unscaled).
            sigma: the call's sigmas, one per row.
            c: the call's conditioning dict.
            cond_or_uncond: ComfyUI's chunk kinds (0 cond, 1 uncond).
            step: the keyframe acting at this call.
            index: the executed step (None when the host does not report the schedule: no reuse).
        """
        row_scale = self.row_scales(x.shape[0], cond_or_uncond, step)
        rows = torch.nonzero(row_scale).flatten()
        if rows.numel() == 0 or self.spec.skips_everything:
            return None
        per_chunk, chunks = x.shape[0] // len(cond_or_uncond), len(cond_or_uncond)
        self._check_batches(per_chunk)
        raw, fresh = self.raw_residuals(x, sigma, c, cond_or_uncond, rows, step, index)
        key = (x.device, tuple(x.shape), x.dtype, tuple(cond_or_uncond))
        if not fresh:
            # Kept residuals weighted as at the last call: that call's result serves again (the UNet only reads it).
            with self._lock:
                last = self._weighted.get(key)
            if last is not None and last[0] is raw and torch.equal(last[1], row_scale):
                return last[2]
        subset = rows.numel() < x.shape[0]
        mask = None
        if self.spec.mask is not None:
            mask = tile_rows(self.spec.mask.to(x.device), per_chunk, chunks, "mask")
            mask = mask[rows.to(x.device)] if subset else mask
        grid = self.binding.token_grid(x.shape[-2], x.shape[-1])
        res = weight_residuals(raw, self.spec.scales, row_scale[rows], mask, inplace=fresh, token_grid=grid)
        if subset:
            res = scatter_residuals(res, rows, x.shape[0])
        res = res.map(lambda t: t.to(x.dtype))
        # Spread last: repeated blocks share one tensor, weighted once above.
        res = res if self.binding.expand is None else self.binding.expand(res)
        if not fresh:
            with self._lock:
                self._weighted[key] = (raw, row_scale, res)
        return res

    def _check_batches(self, per_chunk: int) -> None:
        # The latent batch is first known here; the Apply node has checked everything else.
        check_broadcast(NODE_ID, "image", self.spec.hint.shape[0], "the latent", per_chunk)
        if self.spec.mask is not None:
            check_broadcast(NODE_ID, "mask", self.spec.mask.shape[0], "the latent", per_chunk)
        for n, extra in enumerate(self.control.extra_hints, start=2):
            check_broadcast("CNR_UnionType", f"image_{n}", extra.shape[0], "the latent", per_chunk)

    def staged(self, x: Tensor, sigma: Tensor, c: dict, cond_or_uncond: Sequence[int],
               step: StepControl = StepControl(), index: Optional[int] = None
               ) -> Tuple[Optional[StagedControl], Optional[tuple]]:
        """This call's :class:`StagedControl` for a control the base model's forward runs (None when it adds
        nothing: every row or residual at scale 0), and with residual reuse at a computing call, its batch
        layout key and record (:class:`ComputedResiduals` without residuals yet; else None).

        Reuse follows :meth:`raw_residuals`' rules and batch layout key (plus the caption length, which the
        skips' sequence has): at a reusing call the control carries the skips kept from the last computed call.
        """
        row_scale = self.row_scales(x.shape[0], cond_or_uncond, step)
        rows = torch.nonzero(row_scale).flatten()
        if rows.numel() == 0 or self.spec.skips_everything:
            return None, None
        per_chunk, chunks = x.shape[0] // len(cond_or_uncond), len(cond_or_uncond)
        net = self.ensure_loaded(x.device)
        self._check_batches(per_chunk)
        _, embedding = self.hint_for(x, net)
        embedding = tile_rows(embedding, per_chunk, chunks, "control image")[rows.to(embedding.device)]
        weights = None
        if self.spec.mask is not None:
            mask = tile_rows(self.spec.mask.to(x.device), per_chunk, chunks, "mask")[rows.to(x.device)]
            weights = mask_tokens(mask.float(), self.binding.token_grid(x.shape[-2], x.shape[-1]))
        reused, pending = None, None
        if self.spec.reuse.enabled and index is not None:
            context = c.get("c_crossattn")
            key = (x.device, tuple(x.shape), x.dtype, tuple(cond_or_uncond), tuple(rows.tolist()),
                   None if context is None else context.shape[1])
            x_in = self.model_sampling.calculate_input(sigma, x)
            timestep = float(self.model_sampling.timestep(sigma).flatten()[0])
            with self._lock:
                last = self._computed.get(key)
            if should_compute(self.spec.reuse, last, index, step.keyframe, x_in, timestep):
                pending = (key, ComputedResiduals(index, step.keyframe, x_in, timestep, None))
            else:
                reused = last.residuals.output
        staged = StagedControl(net=net, embedding=embedding, rows=rows.to(x.device),
                               row_scale=row_scale[rows].to(x.device), scales=self.spec.scales,
                               token_weights=weights, attention=self.binding.attention, reused=reused,
                               keep=None if pending is None else [])
        return staged, pending

    def raw_residuals(self, x: Tensor, sigma: Tensor, c: dict, cond_or_uncond: Sequence[int], rows: Tensor,
                      step: StepControl, index: Optional[int]) -> Tuple[ControlResiduals, bool]:
        """The ControlNet's unweighted residuals for ``rows`` of the batch, and whether they are fresh
        (nobody else holds them): computed now, or kept from an earlier call of the same batch layout
        (step-invariant controls such as T2I-Adapters; residual reuse)."""
        key = (x.device, tuple(x.shape), x.dtype, tuple(cond_or_uncond), tuple(rows.tolist()))
        if self.control.net.step_invariant:
            # The same residuals at every step: computed once per batch layout; the UNet only reads them.
            with self._lock:
                if key in self._fixed:
                    return self._fixed[key], False
            res = self.forward(x, sigma, c, cond_or_uncond, rows)
            with self._lock:
                self._fixed[key] = res
            return res, False
        if not self.spec.reuse.enabled or index is None:
            return self.forward(x, sigma, c, cond_or_uncond, rows), True
        x_in = self.model_sampling.calculate_input(sigma, x)
        timestep = float(self.model_sampling.timestep(sigma).flatten()[0])
        with self._lock:
            last = self._computed.get(key)
        if not should_compute(self.spec.reuse, last, index, step.keyframe, x_in, timestep):
            return last.residuals, False
        res = self.forward(x, sigma, c, cond_or_uncond, rows)
        with self._lock:
            self._computed[key] = ComputedResiduals(index, step.keyframe, x_in, timestep, res)
        return res, False

    def forward(self, x: Tensor, sigma: Tensor, c: dict, cond_or_uncond: Sequence[int],
                rows: Tensor) -> ControlResiduals:
        """One ControlNet forward on ``rows`` of the batch, from the same input the UNet sees."""
        per_chunk, chunks = x.shape[0] // len(cond_or_uncond), len(cond_or_uncond)
        net = self.ensure_loaded(x.device)
        x_in = self.model_sampling.calculate_input(sigma, x)
        timesteps = self.model_sampling.timestep(sigma).float()
        context = c.get("crossattn_controlnet", c["c_crossattn"])
        y = c.get("y") if self.binding.takes_y else None
        hints, embedding = self.hint_for(x, net)
        embedding = _each(lambda t: tile_rows(t, per_chunk, chunks, "control image"), embedding)
        subset = rows.numel() < x.shape[0]
        pick = (lambda t: t[rows.to(t.device)]) if subset else (lambda t: t)
        # With the embedding given, the forward only checks the hint's size: one row is enough.
        extra = {key: pick(per_row(torch.as_tensor(c[key], device=x.device), x.shape[0]))
                 for key in self.binding.cond_keys}
        if self.binding.attention is not None:
            extra["attention"] = self.binding.attention
        return net(pick(x_in), pick(timesteps.expand(x.shape[0])), pick(context), _one_or_all([h[:1] for h in hints]),
                   None if y is None else pick(y), control_type=self._control_type,
                   hint_embedding=_each(pick, embedding), **extra)


def _each(fn: Callable[[Tensor], Tensor], embedding):
    """``fn`` on a hint embedding: one tensor, or a tuple of them (a T2I-Adapter's features)."""
    return tuple(fn(t) for t in embedding) if isinstance(embedding, tuple) else fn(embedding)


def _one_or_all(hints: Sequence[Tensor]):
    """A single hint as a tensor (every family takes that), several as a list (ControlNet Union)."""
    return hints[0] if len(hints) == 1 else list(hints)
