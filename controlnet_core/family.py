"""The contract every control-model family's module keeps, as the loader builds it and the injection uses it.

A family is one folder under ``families/`` whose module implements :class:`ControlModel`; the sampler
wrapper and the Apply node read only what is written here, never the family's class.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

from torch import Tensor, nn

from .errors import ControlNetInputError
from .residuals import ControlResiduals

__all__ = ["VAE_DOWNSCALE", "ControlModel", "HintInput", "ModelFormat", "check_hint_batch"]

HintInput = Literal["latent", "pixels"]
"""What a family's hint is: the VAE latent of the control image (encoded at sampling time), or the image."""

VAE_DOWNSCALE = 8
"""Image pixels per latent pixel of every VAE the supported base models use (SD, SDXL, SD3, Flux)."""


@runtime_checkable
class ControlModel(Protocol):
    """What a loaded control model offers the injection, whatever its family.

    Attributes:
        family: its family, the name of its folder under ``families/`` (``"controlnet"``, ``"flux"``, ...);
            the base model it was made for is ``config.family``.
        hint_input: whether :meth:`forward` takes the control image or its VAE latent.
        num_residuals: its own residuals, one ``block_weights`` value each.
        residual_layout: what those residuals are, in order, for messages.
        step_invariant: residuals do not depend on the step (computed once per image and batch layout).

    A family whose control needs the base model's own intermediate tokens (Z-Image Fun: the tokens before
    the noise refiner and the unified sequence before the main layers) has no :meth:`forward`; it offers
    its stages instead, and its binding runs them inside the base model's forward (``FamilyBinding.install``).
    """

    family: str
    hint_input: HintInput
    num_residuals: int
    residual_layout: str
    step_invariant: bool

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The control-image size, in pixels, for a latent of ``height`` x ``width``.

        The one owner of that rule: the sampler wrapper fits the control image to it, and a latent hint
        is encoded from an image of this size.
        """

    def embed_hint(self, hint: Union[Tensor, Sequence[Tensor]], *, control_type=None):
        """The hint's embedding, which depends on neither the step nor the latent: cached by the caller."""

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, hint, y: Optional[Tensor] = None, *,
                control_type=None, hint_embedding=None, **extra) -> ControlResiduals:
        """The control's residuals for one model call."""


@dataclass(frozen=True)
class ModelFormat:
    """One row of the loader's format table: a family's ``format.py`` lists its rows in ``FORMATS``.

    Attributes:
        name: what the weights are, for messages (e.g. ``"controlnet"``).
        claims: ``state_dict -> bool`` from keys and shapes alone.
        build: ``(state_dict, *, dtype, device, **options) -> module``; raises
            :class:`~.errors.ControlNetFormatError` for weights it recognises but refuses.
    """

    name: str
    claims: Callable[[Mapping[str, Tensor]], bool]
    build: Callable[..., nn.Module]


def check_hint_batch(hint: Tensor, x: Tensor) -> None:
    """Raise :class:`ControlNetInputError` unless the hint has one row or one per latent row."""
    if hint.shape[0] not in (1, x.shape[0]):
        raise ControlNetInputError(
            f"hint batch {hint.shape[0]} does not match latent batch {x.shape[0]} (use 1 to broadcast)")
