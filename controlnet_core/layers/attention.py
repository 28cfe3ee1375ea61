"""The attention kernel of the transformer ControlNets (Flux, SD3), replaceable by the host's.

The blocks compute queries, keys and values and hand them to an :data:`AttentionFn`. The default,
:func:`scaled_dot_product`, is PyTorch's; a host can pass its own kernel (ComfyUI's
``optimized_attention``: PyTorch, xformers, SageAttention, split...), so the ControlNet attends
the way the base model beside it does.
"""
from __future__ import annotations

from typing import Callable

import torch.nn.functional as F
from torch import Tensor

__all__ = ["AttentionFn", "scaled_dot_product"]

AttentionFn = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``(q, k, v) -> out``: queries, keys and values :math:`(B, H, N, d)`, out :math:`(B, N, H d)`."""


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """PyTorch's scaled dot-product attention over all tokens.

    Args:
        q: queries :math:`(B, H, N, d)`.
        k: keys :math:`(B, H, N, d)`.
        v: values :math:`(B, H, N, d)`.

    Returns:
        :math:`(B, N, H d)`, heads side by side.
    """
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)
