"""Building a module around loaded weights: on the meta device, checked key by key, no initialisation.

Every family's builder ends in :func:`assemble`; every key reader counts numbered blocks with
:func:`numbered_indices`.
"""
from __future__ import annotations

import re
from typing import Callable, Iterable, List, Mapping, Optional, TypeVar

import torch
from torch import Tensor, nn

from .errors import ControlNetFormatError

__all__ = ["assemble", "cast_floating", "check_fits", "numbered_indices"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def check_fits(module: nn.Module, state_dict: Mapping[str, Tensor], what: str) -> None:
    """Raise :class:`ControlNetFormatError` unless ``state_dict`` has exactly ``module``'s keys and shapes.

    Args:
        module: the module built for the weights (on the meta device is enough).
        state_dict: the weights, in the module's key layout.
        what: the architecture, for the message (e.g. ``"detected sd1"``).
    """
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        raise ControlNetFormatError(
            f"weights do not fit the {what} architecture: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unknown (e.g. {unexpected[:3]})")
    wrong = [k for k, shape in expected.items() if tuple(state_dict[k].shape) != shape]
    if wrong:
        raise ControlNetFormatError(
            f"{len(wrong)} tensors have the wrong shape for the {what} architecture, e.g. {wrong[0]} is "
            f"{list(state_dict[wrong[0]].shape)} where {list(expected[wrong[0]])} belongs; the file is damaged or "
            "mixes two models")


def numbered_indices(keys: Iterable[str], pattern: str) -> List[int]:
    r"""The sorted distinct block numbers that ``pattern`` (a regex whose group 1 is the number) finds in ``keys``.

    Example:
        >>> numbered_indices(["blocks.0.a", "blocks.2.b", "blocks.0.c", "head.w"], r"blocks\.(\d+)\.")
        [0, 2]
    """
    compiled = re.compile(pattern)
    return sorted({int(m.group(1)) for k in keys if (m := compiled.match(k))})


def cast_floating(state_dict: Mapping[str, Tensor], dtype: Optional[torch.dtype]) -> Mapping[str, Tensor]:
    """``state_dict`` with its floating-point tensors in ``dtype`` (None: as they are)."""
    if dtype is None:
        return state_dict
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state_dict.items()}


def assemble(factory: Callable[[], ModuleT], state_dict: Mapping[str, Tensor], what: str, *,
             dtype: Optional[torch.dtype] = None, device=None) -> ModuleT:
    """The module ``factory`` builds, holding ``state_dict``'s tensors as its parameters, ready for inference.

    The module is built on the meta device, so nothing is allocated or initialised only to be
    overwritten; the tensors are taken as they are (no copy) after the cast to ``dtype``.

    Args:
        factory: builds the module (called under ``torch.device("meta")``).
        state_dict: the weights, in the module's key layout.
        what: the architecture, for error messages.
        dtype: compute dtype of the floating-point weights; None keeps the stored one.
        device: where the parameters live; None keeps the tensors where they are.

    Returns:
        The module in eval mode, without gradients.

    Raises:
        ControlNetFormatError: keys or shapes do not fit (see :func:`check_fits`).
    """
    state_dict = cast_floating(state_dict, dtype)
    with torch.device("meta"):
        net = factory()
    check_fits(net, state_dict, what)
    net.load_state_dict(state_dict, strict=True, assign=True)
    if device is not None:
        net.to(device)
    return net.eval().requires_grad_(False)
