"""The staged Z-Image controls as ComfyUI's Z-Image patches: one after each noise-refiner block, one after each
main layer.

Newer ComfyUI calls ``transformer_options["patches"]["noise_refiner"]`` and ``["double_block"]`` from its Z-Image
model (``set_model_noise_refiner_patch`` / ``set_model_double_block_patch``); on ComfyUI 0.3.75, whose model has
no such hooks, the pack's own forward (``z_image.py``) calls the same two functions at the same points with the
same arguments. Either way they read the call's :class:`~.binding.StagedControl` tuple from the options and keep
what the call needs between blocks (the control streams, the main-stage skip iterators) in the call's own
options dict, which lives as long as the call.

With residual reuse, a staged control either carries the raw skips of the last computed step (``reused``: they
are added, weighted as this call says, and the control's layers do not run) or a list to fill with the raw skips
it computes (``keep``), which the sampler wrapper keeps once the call returns.

Arguments as ComfyUI passes them: ``img`` (image tokens after the block), ``img_input`` (before the stage),
``txt`` (caption tokens: refined ones at the refiner, the unified sequence's at a main layer), ``pe`` (the image
tokens' rotary matrices, ``(B, N, 1, d/2, 2, 2)``), ``vec`` (timestep embedding), ``block_index``,
``transformer_options``.
"""
from __future__ import annotations

from typing import Iterator, List, Optional, Tuple

import torch
from torch import Tensor

from ...controlnet_core.families.z_image.model import position_ids, sequence_weights
from ...controlnet_core.layers.attention import AttentionFn, scaled_dot_product
from ...controlnet_core.layers.rotary import Rope, rope_frequencies
from .binding import STAGED_KEY, StagedControl

__all__ = ["STATE_KEY", "after_main_layer", "after_refiner_block", "rope_from_matrices"]

STATE_KEY = "cnr_z_image_state"
"""Entry of the call's ``transformer_options`` holding what the patches carry from block to block."""


def rope_from_matrices(pe: Tensor) -> Rope:
    """The core's ``(cos, sin)`` from ComfyUI's rotary matrices ``[[cos, -sin], [sin, cos]]`` of one row."""
    return pe[0, :, 0, :, 0, 0].float(), pe[0, :, 0, :, 1, 0].float()


def _kernel(job: StagedControl) -> AttentionFn:
    return job.attention or scaled_dot_product


def _stream_start(job: StagedControl, x0: Tensor) -> Tensor:
    """The control stream padded like the image run; the run's pad tokens are the model's own pad token."""
    grid_tokens = job.embedding.shape[1]
    pad = x0[:1, grid_tokens] if x0.shape[1] > grid_tokens else x0[:1, 0]
    return job.net.stream_start(job.embedding.to(x0.dtype), pad, x0.shape[1])


def _refiner_stage(job: StagedControl, x0: Tensor, rope: Rope, vec: Tensor) -> Tuple[Optional[Tensor], tuple]:
    """``(stream for the main stage, refiner skips)``: run, or the skips kept from the last computed step (no
    stream: the main stage reuses its skips too)."""
    if job.reused is not None:
        return None, job.reused[:job.net.config.refiner_skips]
    c, skips = job.net.refine(_stream_start(job, x0), x0[job.rows], rope, vec[job.rows], _kernel(job))
    if job.keep is not None:
        job.keep.extend(skips)
    return c, skips


def _kept(skips: Iterator[Tensor], keep: List[Tensor]) -> Iterator[Tensor]:
    """``skips``, each one also put in ``keep`` as it is drawn."""
    for skip in skips:
        keep.append(skip)
        yield skip


def after_refiner_block(args: dict) -> dict:
    """The ``noise_refiner`` patch: refiner-stage skips into the image tokens (the first block also runs the
    control streams' refiner stage); keeps the refined caption tokens for the main stage."""
    options = args["transformer_options"]
    staged: Tuple[StagedControl, ...] = options.get(STAGED_KEY, ())
    if not staged:
        return {}
    index, img, vec = args["block_index"], args["img"], args["vec"]
    if index == 0:
        x0 = args["img_input"]
        rope = rope_from_matrices(args["pe"])
        options[STATE_KEY] = {"image_rope": rope,
                              "streams": [_refiner_stage(job, x0, rope, vec) for job in staged]}
    state = options[STATE_KEY]
    txt = state["txt"] = args["txt"]
    n_cap, n_img = txt.shape[1], img.shape[1]
    image = slice(n_cap, n_cap + n_img)
    if "weights" not in state:
        state["weights"] = [sequence_weights(job.row_scale, n_cap + n_img, image, job.token_weights).to(img.dtype)
                            for job in staged]
    for job, (_, skips), weight in zip(staged, state["streams"], state["weights"]):
        if index < len(skips):
            img = img.index_add(0, job.rows, skips[index].to(img.dtype) * (weight[:, image] * job.scales[index]))
    return {"img": img}


def _prepare_main_stage(state: dict, staged, txt: Tensor, img: Tensor, vec: Tensor) -> None:
    """The main stage's skip iterators, from the unified sequence before the main layers: the refined caption
    tokens, then the image tokens after the noise refiner."""
    iterators: List[Iterator[Tensor]] = []
    if any(job.reused is None for job in staged):
        cfg = staged[0].net.config
        cap_ids, _ = position_ids(txt.shape[1], (0, 0), 0, device=txt.device)
        cap_rope = rope_frequencies(cap_ids, cfg.axes_dim, cfg.theta)
        rope = tuple(torch.cat(pair) for pair in zip(cap_rope, state["image_rope"]))
        unified = torch.cat((txt, img), dim=1)
        image = slice(txt.shape[1], txt.shape[1] + img.shape[1])
    for job, (c, _) in zip(staged, state["streams"]):
        if job.reused is not None:
            iterators.append(iter(job.reused[job.net.config.refiner_skips:]))
            continue
        skips = job.net.layer_skips(c, unified[job.rows], image, rope, vec[job.rows], _kernel(job))
        iterators.append(skips if job.keep is None else _kept(skips, job.keep))
    state["layer_skips"] = iterators
    state["places"] = [{place: k for k, place in enumerate(job.net.config.places)} for job in staged]
    state["n_cap"] = txt.shape[1]


def after_main_layer(args: dict) -> dict:
    """The ``double_block`` patch: after main layer ``places[k]``, control layer ``k``'s skip on the whole sequence."""
    options = args["transformer_options"]
    state = options.get(STATE_KEY)
    staged: Tuple[StagedControl, ...] = options.get(STAGED_KEY, ())
    if not staged or state is None:
        return {}
    if "layer_skips" not in state:
        _prepare_main_stage(state, staged, state["txt"], args["img_input"], args["vec"])
    index, img, txt = args["block_index"], args["img"], args["txt"]
    n_cap = state["n_cap"]
    changed = False
    for job, skips, where, weight in zip(staged, state["layer_skips"], state["places"], state["weights"]):
        if index not in where:
            continue
        skip = next(skips).to(img.dtype) * (weight * job.scales[job.net.config.refiner_skips + where[index]])
        txt = txt.index_add(0, job.rows, skip[:, :n_cap])
        img = img.index_add(0, job.rows, skip[:, n_cap:])
        changed = True
    return {"img": img, "txt": txt} if changed else {}
