"""Building a module around loaded weights: on the meta device, checked key by key, no initialisation."""
from __future__ import annotations

from typing import Callable, Mapping, TypeVar

import torch
from torch import Tensor, nn

from .errors import ControlNetFormatError

__all__ = ["assemble", "check_fits"]

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


def assemble(factory: Callable[[], ModuleT], state_dict: Mapping[str, Tensor], what: str) -> ModuleT:
    """The module ``factory`` builds, holding ``state_dict``'s tensors as its parameters.

    The module is built on the meta device, so nothing is allocated or initialised only to be
    overwritten; the tensors are taken as they are (same dtype and device, no copy).

    Args:
        factory: builds the module (called under ``torch.device("meta")``).
        state_dict: the weights, in the module's key layout.
        what: the architecture, for error messages.

    Raises:
        ControlNetFormatError: keys or shapes do not fit (see :func:`check_fits`).
    """
    with torch.device("meta"):
        net = factory()
    check_fits(net, state_dict, what)
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net
