"""What a control model adds to a diffusion model, and the pure batch helpers around it.

A :class:`ControlResiduals` names its tensors by the injection point ComfyUI's models read from
their ``control`` dict:

* ``input``: added to the hidden state after input blocks (T2I-Adapter features on a UNet; per
  double block on Flux).
* ``output``: added to the UNet's skip connections, shallow to deep (ControlNet down residuals);
  per single block on Flux; per joint block on SD3 (ComfyUI's MMDiT reads ``output``).
* ``middle``: added to the middle block's output.

``input`` holds one entry per block of the base model, ``None`` where nothing is added, so that
positions survive every helper; :attr:`ControlResiduals.tensors` lists only the real tensors, in
the order the family's diffusers oracle returns them (input, then output, then middle).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from torch import Tensor

__all__ = ["ControlResiduals", "INJECTION_POINTS", "merge_control", "scatter_residuals", "scatter_rows",
           "check_same_layout", "tile_rows"]

INJECTION_POINTS = ("input", "output", "middle")


@dataclass(frozen=True, eq=False)
class ControlResiduals:
    """Residuals by injection point; every tensor is :math:`(B, C_k, H_k, W_k)` or :math:`(B, N_k, D)`.

    Attributes:
        input: per base-model block, shallow to deep, added after that block; ``None`` = nothing.
        output: per UNet skip connection, shallow to deep (12 for SD1.x/2.x, 9 for SDXL).
        middle: added to the middle block's output (at most one tensor for a UNet).

    Example:
        >>> r = ControlResiduals(output=(torch.ones(1, 4, 8, 8),), middle=(torch.ones(1, 8, 4, 4),))
        >>> [tuple(t.shape) for t in r.tensors]
        [(1, 4, 8, 8), (1, 8, 4, 4)]
        >>> r.with_tensors([t * 2 for t in r.tensors]).middle[0].max().item()
        2.0
    """

    input: Tuple[Optional[Tensor], ...] = ()
    output: Tuple[Tensor, ...] = ()
    middle: Tuple[Tensor, ...] = ()

    @property
    def tensors(self) -> Tuple[Tensor, ...]:
        """Every residual, input then output then middle, skipping empty ``input`` slots."""
        return tuple(t for t in self.input if t is not None) + self.output + self.middle

    def with_tensors(self, tensors: Iterable[Tensor]) -> "ControlResiduals":
        """The same layout holding ``tensors`` (in :attr:`tensors` order) instead."""
        new = list(tensors)
        if len(new) != len(self.tensors):
            raise ValueError(f"{len(new)} tensors for a layout of {len(self.tensors)}")
        it = iter(new)
        inputs = tuple(None if t is None else next(it) for t in self.input)
        output = tuple(next(it) for _ in self.output)
        middle = tuple(next(it) for _ in self.middle)
        return replace(self, input=inputs, output=output, middle=middle)

    def map(self, fn: Callable[[Tensor], Tensor]) -> "ControlResiduals":
        """Apply ``fn`` to every tensor, keeping the layout."""
        return self.with_tensors(fn(t) for t in self.tensors)

    @property
    def batch(self) -> int:
        """Rows of the batch (every tensor shares its first dimension)."""
        return self.tensors[0].shape[0]


def _add(old: Optional[Tensor], new: Optional[Tensor]) -> Optional[Tensor]:
    if old is None:
        return new
    if new is None:
        return old
    return old + new.to(old.dtype)


def merge_control(control: Optional[Dict[str, list]], residuals: ControlResiduals, *,
                  input_popped: bool = True) -> Dict[str, list]:
    """ComfyUI's ``control`` dict with ``residuals`` added; the given dict and its lists stay untouched.

    Residuals of other controls already in the dict (ComfyUI's own ControlNets, other stacked
    nodes) are kept and added to, entry by entry.

    Args:
        control: the dict as ComfyUI passes it (keys ``input``, ``middle``, ``output``), or None.
        residuals: what to add.
        input_popped: the model takes ``input`` entries with ``list.pop()`` (ComfyUI's UNet, so the
            list is stored deepest block first); False for models that index it in block order
            (ComfyUI's Flux and MMDiT).

    Returns:
        A new dict with new lists.

    Raises:
        ValueError: both sides hold an ``output`` or ``middle`` list of different lengths.
            ``input`` lists of different lengths are aligned on the first block (ComfyUI's own
            SDXL T2I-Adapter lists 10 entries for SDXL's 9 input blocks). With
            ``input_popped=False`` (transformers, which read entry ``i`` after block ``i`` only
            while ``i`` is in range) every list is aligned on the first block and the shorter
            one padded with None: ComfyUI spreads SD3.5 residuals over all 38 joint blocks,
            diffusers' rule over 37.

    Example:
        >>> r = ControlResiduals(output=(torch.ones(1), torch.ones(1)), middle=(torch.ones(1),))
        >>> merged = merge_control({"output": [torch.ones(1), None]}, r)
        >>> [t.item() for t in merged["output"]], merged["input"]
        ([2.0, 1.0], [])
    """
    merged: Dict[str, List[Optional[Tensor]]] = {k: list(v) for k, v in (control or {}).items()}
    for key in INJECTION_POINTS:
        new = list(getattr(residuals, key))
        if key == "input" and input_popped:
            new.reverse()
        if not new:
            merged.setdefault(key, [])
            continue
        old = merged.get(key) or [None] * len(new)
        if (key == "input" or not input_popped) and len(old) != len(new):
            old, new = _align_blocks(old, new, input_popped)
        if len(old) != len(new):
            raise ValueError(f"cannot add {len(new)} '{key}' residuals to another control's {len(old)}; "
                             "the two controls were made for different models")
        merged[key] = [_add(o, n) for o, n in zip(old, new)]
    return merged


def _align_blocks(a: list, b: list, popped: bool) -> Tuple[list, list]:
    pad = [None] * abs(len(a) - len(b))

    def grow(x: list) -> list:
        return pad + x if popped else x + pad  # popped lists hold the first block last
    return (grow(a), b) if len(a) < len(b) else (a, grow(b))


def tile_rows(t: Tensor, per_chunk: int, chunks: int, what: str) -> Tensor:
    r"""A per-latent tensor (batch 1 or ``per_chunk``) repeated for each cond/uncond chunk.

    ComfyUI batches a model call as ``chunks`` blocks of ``per_chunk`` rows (cond, uncond, ...);
    a hint or mask given once per latent must line up with every block.

    Args:
        t: :math:`(1 \text{ or } P, ...)`.
        per_chunk: latents per chunk, :math:`P`.
        chunks: number of chunks.
        what: the tensor's name for the error message.

    Returns:
        :math:`(P \cdot chunks, ...)` (a view when ``t`` has one row).

    Example:
        >>> tile_rows(torch.tensor([[1.0], [2.0]]), 2, 2, "hint").flatten().tolist()
        [1.0, 2.0, 1.0, 2.0]
    """
    if t.shape[0] == 1:
        return t.expand(per_chunk * chunks, *t.shape[1:])
    if t.shape[0] != per_chunk:
        raise ValueError(f"the {what} batch is {t.shape[0]} but the latent batch is {per_chunk}; "
                         f"give one {what} for all latents or one per latent")
    return t.repeat(chunks, *([1] * (t.ndim - 1)))


def scatter_rows(t: Tensor, rows: Tensor, batch: int) -> Tensor:
    """Rows computed for a subset placed into a zero batch of ``batch`` rows.

    Args:
        t: :math:`(R, ...)`, the rows computed.
        rows: :math:`(R,)` indices into the full batch.
        batch: full batch size.

    Example:
        >>> scatter_rows(torch.ones(1, 2), torch.tensor([1]), 3).tolist()
        [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    """
    out = t.new_zeros((batch,) + tuple(t.shape[1:]))
    out[rows.to(t.device)] = t
    return out


def scatter_residuals(residuals: ControlResiduals, rows: Tensor, batch: int) -> ControlResiduals:
    """:func:`scatter_rows` over every tensor of ``residuals``."""
    return residuals.map(lambda t: scatter_rows(t, rows, batch))


def check_same_layout(items: Sequence[ControlResiduals]) -> None:
    """Raise ValueError unless every item has the same layout (for sums of several controls)."""
    layouts = {(tuple(t is None for t in r.input), len(r.output), len(r.middle)) for r in items}
    if len(layouts) > 1:
        raise ValueError(f"residual layouts differ: {sorted(layouts)}")
