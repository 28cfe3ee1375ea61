"""Architecture description of a ControlNet, detected from weights or written by hand."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

__all__ = ["ControlNetConfig"]


@dataclass(frozen=True)
class ControlNetConfig:
    """Shape of a ControlNet's copied encoder.

    Attributes:
        model_channels: channels of the first input block (320 for SD1.x/2.x/SDXL).
        channel_mult: channel multiplier per resolution level.
        num_res_blocks: residual blocks per level.
        transformer_depth: transformer blocks after each residual block, one entry per residual
            block in input order (0 = no attention there).
        transformer_depth_middle: transformer blocks in the middle block; -1 = the middle block
            is a single residual block.
        context_dim: width of the cross-attention context (768 SD1.x, 1024 SD2.x, 2048 SDXL).
        num_heads: attention heads per block, or -1 when ``num_head_channels`` fixes the head size.
        num_head_channels: channels per head, or -1 when ``num_heads`` fixes the head count.
        use_linear_in_transformer: transformer in/out projections are linear (SD2.x, SDXL)
            rather than 1x1 convolutions (SD1.x).
        adm_in_channels: width of the SDXL ``y`` vector (pooled text + size embeddings), or None.
        in_channels: latent channels the encoder reads.
        hint_channels: channels of the control image.
        hint_block_channels: channels of the hint embedding's convolution pairs.
        global_pool: average every residual over space (shuffle-style models).
        family: ``"sd1"``, ``"sd2"``, ``"sdxl"`` or ``"custom"``, for messages and checks.
    """

    model_channels: int = 320
    channel_mult: Tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: Tuple[int, ...] = (2, 2, 2, 2)
    transformer_depth: Tuple[int, ...] = (1, 1, 1, 1, 1, 1, 0, 0)
    transformer_depth_middle: int = 1
    context_dim: int = 768
    num_heads: int = 8
    num_head_channels: int = -1
    use_linear_in_transformer: bool = False
    adm_in_channels: Optional[int] = None
    in_channels: int = 4
    hint_channels: int = 3
    hint_block_channels: Tuple[int, ...] = (16, 32, 96, 256)
    global_pool: bool = False
    family: str = "custom"

    def __post_init__(self) -> None:
        if len(self.num_res_blocks) != len(self.channel_mult):
            raise ValueError("num_res_blocks needs one entry per channel_mult level")
        if len(self.transformer_depth) != sum(self.num_res_blocks):
            raise ValueError("transformer_depth needs one entry per residual block")
        if (self.num_heads == -1) == (self.num_head_channels == -1):
            raise ValueError("set exactly one of num_heads and num_head_channels")

    @property
    def num_down_residuals(self) -> int:
        """Residuals added to the UNet's skip connections (12 for SD1.x/2.x, 9 for SDXL)."""
        return 1 + sum(self.num_res_blocks) + len(self.channel_mult) - 1

    @property
    def time_embed_dim(self) -> int:
        """Width of the time embedding (4x ``model_channels``)."""
        return self.model_channels * 4

    def heads_for(self, channels: int) -> int:
        """Attention heads used by a transformer of ``channels`` width."""
        if self.num_heads != -1:
            return self.num_heads
        return max(1, channels // self.num_head_channels)
