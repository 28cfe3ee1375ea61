"""The ControlNet module: hint embedding, copied UNet encoder, zero convolutions."""
from __future__ import annotations

from typing import ClassVar, Optional, Tuple

import torch
from torch import Tensor, nn

from ...errors import ControlNetInputError
from ...family import HintInput, check_hint_batch
from ...layers.embeddings import per_row, timestep_embedding
from ...residuals import ControlResiduals
from .blocks import Downsample, EmbedSequential, ResBlock, SpatialTransformer
from .config import ControlNetConfig

__all__ = ["ControlNet"]


def _zero_conv(channels: int, dtype, device) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels, channels, 1, dtype=dtype, device=device))


class ControlNet(nn.Module):
    """ControlNet encoder producing UNet residuals.

    Args:
        config: the architecture.
        dtype: parameter dtype.
        device: parameter device; ``"meta"`` builds it without allocating (weights then come from
            ``load_state_dict(..., assign=True)``).

    Example:
        >>> cfg = ControlNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
        ...                        transformer_depth=(1, 0), context_dim=32, num_heads=2)
        >>> net = ControlNet(cfg)
        >>> res = net(torch.zeros(1, 4, 8, 8), torch.tensor([10.0]), torch.zeros(1, 7, 32),
        ...           torch.zeros(1, 3, 64, 64))
        >>> len(res.output), tuple(res.middle[0].shape)
        (4, (1, 64, 4, 4))
    """

    family: ClassVar[str] = "controlnet"
    hint_input: ClassVar[HintInput] = "pixels"
    step_invariant: ClassVar[bool] = False
    residual_layout: ClassVar[str] = "down blocks, shallow to deep, then the middle block"

    def __init__(self, config: ControlNetConfig, dtype: Optional[torch.dtype] = None, device=None) -> None:
        super().__init__()
        self.config = config
        kw = {"dtype": dtype, "device": device}
        mc, ted = config.model_channels, config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(mc, ted, **kw), nn.SiLU(), nn.Linear(ted, ted, **kw))
        if config.adm_in_channels is not None:
            self.label_emb = nn.Sequential(
                nn.Sequential(nn.Linear(config.adm_in_channels, ted, **kw), nn.SiLU(), nn.Linear(ted, ted, **kw))
            )
        self.input_hint_block = self._hint_block(config, kw)

        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(config.in_channels, mc, 3, padding=1, **kw))])
        self.zero_convs = nn.ModuleList([_zero_conv(mc, **kw)])
        depths = iter(config.transformer_depth)
        ch = mc
        for level, (mult, n_res) in enumerate(zip(config.channel_mult, config.num_res_blocks)):
            for _ in range(n_res):
                layers = [ResBlock(ch, ted, mult * mc, **kw)]
                ch = mult * mc
                depth = next(depths)
                if depth > 0:
                    layers.append(self._transformer(ch, depth, config, kw))
                self.input_blocks.append(EmbedSequential(*layers))
                self.zero_convs.append(_zero_conv(ch, **kw))
            if level != len(config.channel_mult) - 1:
                self.input_blocks.append(EmbedSequential(Downsample(ch, **kw)))
                self.zero_convs.append(_zero_conv(ch, **kw))

        middle = [ResBlock(ch, ted, **kw)]
        if config.transformer_depth_middle >= 0:
            middle += [self._transformer(ch, config.transformer_depth_middle, config, kw), ResBlock(ch, ted, **kw)]
        self.middle_block = EmbedSequential(*middle)
        self.middle_block_out = _zero_conv(ch, **kw)

    @staticmethod
    def _hint_block(config: ControlNetConfig, kw) -> nn.Sequential:
        layers = [nn.Conv2d(config.hint_channels, config.hint_block_channels[0], 3, padding=1, **kw), nn.SiLU()]
        chans = config.hint_block_channels
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(c_in, c_in, 3, padding=1, **kw), nn.SiLU()]
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, stride=2, **kw), nn.SiLU()]
        layers.append(nn.Conv2d(chans[-1], config.model_channels, 3, padding=1, **kw))
        return nn.Sequential(*layers)

    @staticmethod
    def _transformer(ch: int, depth: int, config: ControlNetConfig, kw) -> SpatialTransformer:
        return SpatialTransformer(ch, config.heads_for(ch), depth, config.context_dim,
                                  config.use_linear_in_transformer, **kw)

    @property
    def num_residuals(self) -> int:
        """The down residuals and the middle one."""
        return self.config.num_down_residuals + 1

    @property
    def hint_downscale(self) -> int:
        """Hint pixels per latent pixel (8: three stride-2 convolutions)."""
        return 2 ** (len(self.config.hint_block_channels) - 1)

    def hint_size(self, height: int, width: int) -> Tuple[int, int]:
        """The hint size for a latent of ``height`` x ``width``."""
        return height * self.hint_downscale, width * self.hint_downscale

    def check_inputs(self, x: Tensor, context: Tensor, hint: Tensor, y: Optional[Tensor]) -> None:
        """Raise :class:`ControlNetInputError` naming the first input that does not fit."""
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ControlNetInputError(
                f"latent x must be (B, {cfg.in_channels}, h, w); got {tuple(x.shape)}")
        if hint.ndim != 4 or hint.shape[1] != cfg.hint_channels:
            raise ControlNetInputError(
                f"hint must be (B, {cfg.hint_channels}, H, W); got {tuple(hint.shape)}")
        f = self.hint_downscale
        if tuple(hint.shape[-2:]) != (x.shape[-2] * f, x.shape[-1] * f):
            raise ControlNetInputError(
                f"hint must be {f}x the latent size: latent {x.shape[-2]}x{x.shape[-1]} needs a "
                f"{x.shape[-2] * f}x{x.shape[-1] * f} hint, got {hint.shape[-2]}x{hint.shape[-1]}; "
                "resize the control image first")
        check_hint_batch(hint, x)
        if context.ndim != 3 or context.shape[-1] != cfg.context_dim:
            raise ControlNetInputError(
                f"context width {context.shape[-1]} does not fit this {cfg.family} ControlNet, which "
                f"expects {cfg.context_dim}; pair it with a model of the same family")
        if (y is None) != (cfg.adm_in_channels is None):
            need = f"a y vector of width {cfg.adm_in_channels}" if cfg.adm_in_channels else "no y vector"
            raise ControlNetInputError(f"this {cfg.family} ControlNet takes {need}")
        if y is not None and y.shape[-1] != cfg.adm_in_channels:
            raise ControlNetInputError(f"y width {y.shape[-1]} != {cfg.adm_in_channels}")

    def embed_hint(self, hint: Tensor, *, control_type=None) -> Tensor:
        """The hint embedding added after the first input block, :math:`(B, C_0, H/8, W/8)`.

        It depends on the hint alone, so callers sampling many steps with one hint can compute it
        once and pass it to :meth:`forward` as ``hint_embedding``. ``control_type`` is ignored (the
        argument every family takes; ControlNet Union uses it).
        """
        return self.input_hint_block(hint.to(self.time_embed[0].weight.dtype))

    def forward(self, x: Tensor, timesteps: Tensor, context: Tensor, hint: Tensor,
                y: Optional[Tensor] = None, *, control_type=None,
                hint_embedding: Optional[Tensor] = None) -> ControlResiduals:
        r"""Compute the residuals.

        Args:
            x: the scaled latent the UNet sees, :math:`(B, 4, h, w)`.
            timesteps: model timesteps, :math:`(B,)` or a scalar.
            context: cross-attention context, :math:`(B, T, D)`.
            hint: control image in 0..1, :math:`(B \text{ or } 1, 3, 8h, 8w)`.
            y: SDXL pooled-text and size vector, :math:`(B, A)`; None for SD1.x/2.x.
            control_type: ignored (ControlNet Union's type choice; every family takes the argument).
            hint_embedding: :meth:`embed_hint` of ``hint``, computed earlier; then ``hint`` is only
                checked, not embedded again.

        Returns:
            :class:`ControlResiduals` in the parameters' dtype.
        """
        self.check_inputs(x, context, hint, y)
        guided_hint = self.embed_hint(hint) if hint_embedding is None else hint_embedding
        return self.encode(x, self.embed_time(timesteps, x.shape[0], y), context, guided_hint)

    def embed_time(self, timesteps: Tensor, batch: int, y: Optional[Tensor] = None) -> Tensor:
        """The embedding every residual block reads: timesteps plus, for SDXL, the ``y`` vector.

        Args:
            timesteps: model timesteps, :math:`(B,)` or a scalar.
            batch: rows of the latent, :math:`B`.
            y: SDXL pooled-text and size vector, :math:`(B, A)`, or None.

        Returns:
            :math:`(B, 4 C_0)` in the parameters' dtype.
        """
        dtype = self.time_embed[0].weight.dtype
        timesteps = per_row(timesteps, batch)
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(dtype))
        if y is not None:
            emb = emb + self.label_emb(y.to(dtype))
        return emb

    def encode(self, x: Tensor, emb: Tensor, context: Tensor, guided_hint: Tensor) -> ControlResiduals:
        r"""The copied encoder and its zero convolutions, from embeddings computed beforehand.

        Args:
            x: the scaled latent, :math:`(B, 4, h, w)`.
            emb: :meth:`embed_time` (plus any family-specific term), :math:`(B, 4 C_0)`.
            context: cross-attention context, :math:`(B, T, D)`.
            guided_hint: added after the first input block, :math:`(B \text{ or } 1, C_0, h, w)`.

        Returns:
            :class:`ControlResiduals` in the parameters' dtype.
        """
        dtype = self.time_embed[0].weight.dtype
        h, context = x.to(dtype), context.to(dtype)
        guided_hint = guided_hint.to(dtype)
        outs = []
        for i, (block, zero_conv) in enumerate(zip(self.input_blocks, self.zero_convs)):
            h = block(h, emb, context)
            if i == 0:
                h = h + guided_hint
            outs.append(zero_conv(h))
        h = self.middle_block(h, emb, context)
        outs.append(self.middle_block_out(h))
        if self.config.global_pool:
            outs = [o.mean(dim=(2, 3), keepdim=True) for o in outs]
        return ControlResiduals(output=tuple(outs[:-1]), middle=(outs[-1],))
