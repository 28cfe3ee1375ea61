"""Where an SD3 ControlNet's residuals go in the base model: one residual per joint block, by a rule."""
from __future__ import annotations

import math
from typing import Literal, Tuple, get_args

from ...residuals import ControlResiduals
from .model import LAYOUTS, Layout

__all__ = ["JOINT_BLOCK_RULES", "JointBlockRule", "expand_to_joint_blocks", "joint_block_indices"]

JointBlockRule = Literal["diffusers", "comfyui"]
JOINT_BLOCK_RULES: Tuple[JointBlockRule, ...] = get_args(JointBlockRule)


def joint_block_indices(num_residuals: int, num_joint_blocks: int, layout: Layout,
                        rule: JointBlockRule = "diffusers") -> Tuple[int, ...]:
    """Which ControlNet residual is added after each base-model joint block.

    Entry ``i`` is the residual added after joint block ``i``; blocks past the end get none.

    * ``diffusers`` (``SD3Transformer2DModel``): block ``i`` takes residual
      ``int(i / (L / n))``; the last block (``context_pre_only``) takes none. Both layouts.
    * ``comfyui`` (ComfyUI's ``cldm/mmdit.py`` and ``cldm/dit_embedder.py``, read by
      ``mmdit.py`` as ``control['output'][i]`` after joint block ``i``):

      - ``instantx``: each residual repeated ``L // n`` times (integer division), the very last
        entry dropped. Equals diffusers when ``n`` divides ``L`` (InstantX: 24 blocks / 6);
        otherwise the last ``L - n (L // n)`` blocks get nothing where diffusers spreads all.
      - ``sd35``: each residual repeated ``ceil(L / n)`` times, the list cut at ``L``, so the
        **last block gets a residual too** (as in Stability's reference ``mmditx.py``, which
        adds ``res[i // (L // n)]`` after every block). SD3.5 Large (38 blocks, 19 residuals):
        identical to diffusers on blocks 0..36, and block 37 gets residual 18 only here.

    Args:
        num_residuals: ControlNet blocks ``n``.
        num_joint_blocks: base-model joint blocks ``L``.
        layout: one of :data:`LAYOUTS`.
        rule: one of :data:`JOINT_BLOCK_RULES`.

    Example:
        >>> joint_block_indices(2, 5, "instantx"), joint_block_indices(2, 5, "instantx", "comfyui")
        ((0, 0, 0, 1), (0, 0, 1))
        >>> joint_block_indices(2, 4, "sd35"), joint_block_indices(2, 4, "sd35", "comfyui")
        ((0, 0, 1), (0, 0, 1, 1))
    """
    if rule not in JOINT_BLOCK_RULES:
        raise ValueError(f"joint-block rule {rule!r} is not one of {JOINT_BLOCK_RULES}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout {layout!r} is not one of {LAYOUTS}")
    n, blocks = num_residuals, num_joint_blocks
    if rule == "diffusers":
        interval = blocks / n
        return tuple(int(i / interval) for i in range(blocks - 1))
    if layout == "instantx":
        repeat = blocks // n
        return tuple(i // repeat for i in range(n * repeat - 1))
    repeat = math.ceil(blocks / n)
    return tuple(i // repeat for i in range(min(blocks, n * repeat)))


def expand_to_joint_blocks(residuals: ControlResiduals, num_joint_blocks: int, layout: Layout,
                           rule: JointBlockRule = "diffusers") -> ControlResiduals:
    """Spread per-ControlNet-block residuals over the base model's joint blocks.

    Weight the residuals first (one scale per ControlNet block) and expand last: the expanded
    entries share tensors.

    Args:
        residuals: :meth:`SD3ControlNet.forward`'s output.
        num_joint_blocks: joint blocks of the base model (24 SD3 Medium, 38 SD3.5 Large).
        layout: the ControlNet's ``config.layout``.
        rule: see :func:`joint_block_indices`.

    Returns:
        :class:`ControlResiduals` whose ``output[i]`` is added after joint block ``i`` (the list
        may be shorter than the model; ComfyUI's MMDiT reads ``control['output'][i]`` only while
        ``i`` is in range).
    """
    indices = joint_block_indices(len(residuals.output), num_joint_blocks, layout, rule)
    return ControlResiduals(output=tuple(residuals.output[i] for i in indices))
