"""Input checks the nodes run first, one helper per kind of check.

ComfyUI shows the exception text to the user, so every check raises :class:`NodeInputError`:
the node id once, the input, the sizes involved and what to do. ComfyUI's own validation checks
widget ranges but lets NaN through (every comparison with NaN is false) and checks neither
ranges nor choices of values arriving over a link, so :func:`check_inputs` checks them against
what the node declares.
"""
from __future__ import annotations

import math
from typing import List, Mapping, Optional, Sequence

import torch
from torch import Tensor

from .base import NodeInputError

BLOCK_WEIGHT_LIMIT = 100.0
"""Largest ``block_weights`` magnitude: far above any useful weight (residuals times 100 already swamp the
model), far below what overflows half precision into an all-NaN image."""


def check_number(node: str, name: str, value, lo: Optional[float] = None, hi: Optional[float] = None) -> None:
    """Raise unless ``value`` is a finite number inside ``lo..hi`` (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise NodeInputError(node, name, f"must be a number; got {type(value).__name__} {value!r}")
    if not math.isfinite(value):
        raise NodeInputError(node, name, f"is {value}; it must be a finite number: check the node that computes it")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise NodeInputError(node, name, f"is {value}; it must lie in {lo}..{hi}")


def check_inputs(node_instance, values: Mapping[str, object]) -> None:
    """Check every number and choice in ``values`` against what the node's ``INPUT_TYPES`` declares.

    INT and FLOAT inputs go through :func:`check_number` with the declared min and max; a choice
    must be one of the listed ones. Pass the node function's ``locals()`` so no input is missed;
    names that are not declared inputs (``self``) and unconnected optional inputs are skipped.
    """
    node = node_instance.NODE_ID
    declared = type(node_instance).INPUT_TYPES()
    for section in ("required", "optional"):
        for name, spec in declared.get(section, {}).items():
            value = values.get(name)
            if value is None:
                continue
            options = spec[1] if len(spec) > 1 else {}
            if isinstance(spec[0], (list, tuple)):
                check_choice(node, name, value, spec[0])
            elif spec[0] in ("INT", "FLOAT"):
                check_number(node, name, value, options.get("min"), options.get("max"))


def check_choice(node: str, name: str, value, choices: Sequence) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        shown = ", ".join(repr(c) for c in list(choices)[:12])
        raise NodeInputError(node, name, f"is {value!r}; it must be one of {shown}")


def check_finite(node: str, name: str, tensor: Tensor, what: str = "values") -> None:
    """Raise if ``tensor`` holds NaN or infinity: one bad value would spread through the whole result."""
    if tensor.is_floating_point() and tensor.numel():
        bad = ~torch.isfinite(tensor)
        if bool(bad.any()):
            raise NodeInputError(node, name, f"holds {int(bad.sum())} NaN or infinite {what} of {tensor.numel()}; "
                                             "the node that made it produced invalid values: fix or replace it")


def check_batches(node: str, batches: Mapping[str, Optional[int]]) -> int:
    """Raise unless the given batch sizes are each 1 or one common size; returns that size.

    Args:
        batches: input name to batch size; None (an unconnected input) is skipped.
    """
    given = {name: n for name, n in batches.items() if n is not None}
    sizes = {n for n in given.values() if n != 1}
    if len(sizes) > 1:
        names = list(given)
        listed = ", ".join(f"{name} {n}" for name, n in given.items())
        raise NodeInputError(node, "/".join(names), f"batch sizes do not match ({listed}); give each one item, "
                                                    "or the same number as the others")
    return sizes.pop() if sizes else 1


def check_broadcast(node: str, name: str, n: int, target: str, size: int) -> None:
    """Raise unless ``name``'s batch ``n`` is 1 (used for all) or ``target``'s batch ``size``."""
    if n not in (1, size):
        raise NodeInputError(node, name, f"has a batch of {n} but {target} has {size}; give one {name} for all or "
                                         f"exactly {size}")


def check_same_size(node: str, name: str, size, other: str, other_size, fix: str) -> None:
    """Raise unless two (H, W) sizes agree, naming both as width x height."""
    if tuple(size) != tuple(other_size):
        raise NodeInputError(node, name, f"is {size[1]}x{size[0]} but {other} is {other_size[1]}x{other_size[0]}; "
                                         f"{fix}")


def parse_block_weights(text: str, count: int, node: str, layout: str) -> Optional[List[float]]:
    """``block_weights`` as ``count`` numbers (``""`` = None, all ones), each finite and in range.

    Args:
        text: comma- (or semicolon-) separated numbers.
        count: how many the control needs.
        node: the node id, for messages.
        layout: what the values are, in order, for messages.
    """
    if not text.strip():
        return None
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise NodeInputError(node, "block_weights", f"'{text}' must be comma-separated numbers") from None
    for value in values:
        check_number(node, "block_weights", value, -BLOCK_WEIGHT_LIMIT, BLOCK_WEIGHT_LIMIT)
    if len(values) != count:
        raise NodeInputError(node, "block_weights", f"{len(values)} values given; this control model needs "
                                                    f"{count} ({layout})")
    return values
