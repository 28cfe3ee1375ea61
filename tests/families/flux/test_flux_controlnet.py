"""Flux ControlNets: our residuals equal diffusers' FluxControlNetModel, and the base transformer fed
with our expanded residuals equals it fed with diffusers' residuals."""
import pytest
import torch
from diffusers import SD3ControlNetModel, SD3Transformer2DModel

from cnr_pack.controlnet_core.families.flux.model import FLUX_UNION_MODES, FluxControlNet, expand_to_base
from cnr_pack.controlnet_core.families.flux.tokens import token_grid
from cnr_pack.controlnet_core.injection.weighting import mask_tokens
from cnr_pack.controlnet_core.families.flux.format import (build_flux_diffusers, build_flux_xlabs,
                                                          claims_flux_diffusers,
                                                   claims_flux_mistoline, claims_flux_xlabs)
from cnr_pack.controlnet_core.loading.registry import ControlNetFormatError, detect_format, load_controlnet
from cnr_pack.controlnet_core.errors import ControlNetInputError
from conftest import explicit_softmax_attention
from tiny_flux import (AXES_DIM, LATENT_CHANNELS, XLABS_LATENT_CHANNELS, diffusers_residuals, flux_inputs, image_ids,
                       pack, tiny_flux_controlnet, tiny_flux_transformer, tiny_xlabs_style_controlnet)
from tiny_models import tiny_sd15_diffusers

TOL = 1e-5


def _load(reference) -> FluxControlNet:
    return load_controlnet(reference.state_dict(), axes_dim=AXES_DIM)


def _max_diff(ours, theirs) -> float:
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


def _latent_hint(x, seed=7):
    return torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))


def _pixel_hint(x, seed=7):
    b, _, h, w = x.shape
    return torch.rand(b, 3, 8 * h, 8 * w, generator=torch.Generator().manual_seed(seed))


def test_instantx_residuals_equal_diffusers_block_by_block():
    reference = tiny_flux_controlnet()
    ours = _load(reference)
    x, t, context, pooled, _ = flux_inputs()
    hint = _latent_hint(x)
    double, single = diffusers_residuals(reference, x, t, context, pooled, pack(hint))
    res = ours(x, t, context, hint, pooled)
    assert (len(res.input), len(res.output)) == (2, 2)
    assert min(r.abs().max().item() for r in res.tensors) > 0.1, "random weights must give non-zero residuals"
    assert _max_diff(res.tensors, double + single) <= TOL


@pytest.mark.parametrize("mode", [0, 2, 6])
def test_union_residuals_with_a_mode_and_guidance_equal_diffusers(mode):
    reference = tiny_flux_controlnet(seed=1, num_mode=len(FLUX_UNION_MODES), guidance_embeds=True)
    ours = _load(reference)
    x, t, context, pooled, guidance = flux_inputs()
    hint = _latent_hint(x)
    double, single = diffusers_residuals(reference, x, t, context, pooled, pack(hint), guidance=guidance,
                                         mode=torch.full((x.shape[0], 1), mode))
    res = ours(x, t, context, hint, pooled, guidance=guidance, control_type=mode)
    assert ours.config.num_union_modes == 7 and ours.config.guidance_embed
    assert _max_diff(res.tensors, double + single) <= TOL


def test_union_mode_changes_the_residuals():
    ours = _load(tiny_flux_controlnet(seed=1, num_mode=len(FLUX_UNION_MODES), guidance_embeds=True))
    x, t, context, pooled, guidance = flux_inputs()
    hint = _latent_hint(x)
    canny, depth = (ours(x, t, context, hint, pooled, guidance=guidance, control_type=m).input[0] for m in (0, 2))
    assert (canny - depth).abs().max() > 1e-3


def test_xlabs_style_pixel_hint_residuals_equal_diffusers():
    reference = tiny_xlabs_style_controlnet()
    ours = _load(reference)
    x, t, context, pooled, _ = flux_inputs(channels=XLABS_LATENT_CHANNELS)
    hint = _pixel_hint(x)
    # diffusers' pipeline normalises the control image to -1..1; ours takes 0..1 like ComfyUI's IMAGE.
    double, single = diffusers_residuals(reference, x, t, context, pooled, hint * 2 - 1)
    res = ours(x, t, context, hint, pooled)
    assert (ours.config.hint_input, ours.config.repeat_mode, ours.hint_downscale) == ("pixels", "tile", 8)
    assert _max_diff(res.tensors, double + single) <= TOL


@pytest.mark.parametrize("repeat", [False, True], ids=["consecutive", "tile"])
def test_transformer_with_our_expanded_residuals_equals_it_with_diffusers_residuals(repeat):
    reference = tiny_flux_controlnet(seed=2)
    ours = _load(reference)
    base = tiny_flux_transformer()
    x, t, context, pooled, _ = flux_inputs()
    hint = _latent_hint(x)
    double, single = diffusers_residuals(reference, x, t, context, pooled, pack(hint))
    expanded = expand_to_base(ours(x, t, context, hint, pooled), len(base.transformer_blocks),
                              len(base.single_transformer_blocks), repeat_mode="tile" if repeat else "consecutive")

    def run(block_samples, single_samples, blocks_repeat):
        with torch.no_grad():
            return base(hidden_states=pack(x), encoder_hidden_states=context, pooled_projections=pooled, timestep=t,
                        img_ids=image_ids(x), txt_ids=torch.zeros(context.shape[1], 3),
                        controlnet_block_samples=block_samples, controlnet_single_block_samples=single_samples,
                        controlnet_blocks_repeat=blocks_repeat).sample

    theirs = run(double, single, repeat)
    # One residual per base block: diffusers' interval is 1, so its own spreading is the identity.
    with_ours = run(list(expanded.input), list(expanded.output), False)
    assert (len(expanded.input), len(expanded.output)) == (5, 3)
    assert (theirs - run(None, None, False)).abs().max() > 1e-3, "the control must change the output"
    assert (with_ours - theirs).abs().max().item() <= TOL


def test_each_repeat_mode_spreads_residuals_like_its_reference():
    res = _load(tiny_flux_controlnet()).forward(*_args_with_latent_hint())
    consecutive = expand_to_base(res, 5, 3, repeat_mode="consecutive")
    tiled = expand_to_base(res, 5, 3, repeat_mode="tile")
    tiled_all = expand_to_base(res, 5, 3, repeat_mode="tile_all")

    def order(items, own):
        return [next(i for i, o in enumerate(own) if o is t) for t in items]

    assert order(consecutive.input, res.input) == [0, 0, 0, 1, 1]
    assert order(tiled.input, res.input) == order(tiled_all.input, res.input) == [0, 1, 0, 1, 0]
    assert order(consecutive.output, res.output) == order(tiled.output, res.output) == [0, 0, 1]
    assert order(tiled_all.output, res.output) == [0, 1, 0]


def _args_with_latent_hint():
    x, t, context, pooled, _ = flux_inputs()
    return x, t, context, _latent_hint(x), pooled


def test_sizes_come_from_the_weights():
    reference = tiny_flux_controlnet(num_layers=3, num_single_layers=0, attention_head_dim=8, num_attention_heads=4,
                                     joint_attention_dim=24, pooled_projection_dim=12, axes_dims_rope=[2, 2, 4],
                                     guidance_embeds=True)
    cfg = build_flux_diffusers(reference.state_dict(), axes_dim=(2, 2, 4)).config
    assert (cfg.hidden_size, cfg.num_heads, cfg.depth, cfg.depth_single_blocks) == (32, 4, 3, 0)
    assert (cfg.in_channels, cfg.context_dim, cfg.adm_in_channels, cfg.mlp_hidden) == (LATENT_CHANNELS, 24, 12, 128)
    assert (cfg.hint_input, cfg.hint_channels, cfg.guidance_embed, cfg.family) == ("latent", LATENT_CHANNELS, True,
                                                                                   "flux")


def test_a_cached_hint_embedding_gives_identical_residuals():
    ours = _load(tiny_xlabs_style_controlnet())
    x, t, context, pooled, _ = flux_inputs(channels=XLABS_LATENT_CHANNELS)
    hint = _pixel_hint(x)
    fresh = ours(x, t, context, hint, pooled)
    cached = ours(x, t, context, hint, pooled, hint_embedding=ours.embed_hint(hint))
    assert all(torch.equal(a, b) for a, b in zip(fresh.tensors, cached.tensors))


def test_every_attention_goes_through_the_given_kernel_with_the_same_result():
    ours = _load(tiny_flux_controlnet())
    x, t, context, hint, pooled = _args_with_latent_hint()
    calls = []
    default = ours(x, t, context, hint, pooled)
    routed = ours(x, t, context, hint, pooled, attention=explicit_softmax_attention(calls))
    assert len(calls) == ours.config.depth + ours.config.depth_single_blocks
    assert _max_diff(default.tensors, routed.tensors) <= 1e-5


def test_one_hint_serves_every_row_of_the_batch():
    ours = _load(tiny_flux_controlnet())
    x, t, context, hint, pooled = _args_with_latent_hint()
    one = ours(x, t, context, hint[:1], pooled)
    repeated = ours(x, t, context, hint[:1].expand_as(hint), pooled)
    assert _max_diff(one.tensors, repeated.tensors) <= 1e-6


def test_bfloat16_weights_stay_close_to_float32():
    reference = tiny_flux_controlnet()
    x, t, context, hint, pooled = _args_with_latent_hint()
    full = _load(reference)(x, t, context, hint, pooled)
    half_net = build_flux_diffusers(reference.state_dict(), axes_dim=AXES_DIM, dtype=torch.bfloat16)
    half = half_net(x, t, context, hint, pooled)
    assert all(h.dtype == torch.bfloat16 for h in half.tensors)
    assert max((h.float() - f).abs().max().item() / f.abs().max().item()
               for h, f in zip(half.tensors, full.tensors)) < 0.05


def test_a_guidance_model_without_guidance_is_refused_naming_the_input():
    ours = _load(tiny_flux_controlnet(guidance_embeds=True))
    with pytest.raises(ControlNetInputError, match="guidance"):
        ours(*_args_with_latent_hint())


def test_an_unknown_union_mode_is_refused_listing_the_modes():
    ours = _load(tiny_flux_controlnet(num_mode=7))
    with pytest.raises(ControlNetInputError, match="0 canny, 1 tile, 2 depth"):
        ours(*_args_with_latent_hint(), control_type=7)


def test_a_hint_of_the_wrong_size_is_refused_with_the_size_needed():
    ours = _load(tiny_xlabs_style_controlnet())
    x, t, context, pooled, _ = flux_inputs(channels=XLABS_LATENT_CHANNELS)
    with pytest.raises(ControlNetInputError, match="needs 64x48"):
        ours(x, t, context, _pixel_hint(x)[..., :32, :32], pooled)


@pytest.mark.parametrize("factory", [tiny_flux_controlnet, tiny_xlabs_style_controlnet,
                                     lambda: tiny_flux_controlnet(num_mode=7)], ids=["instantx", "xlabs", "union"])
def test_diffusers_flux_weights_are_claimed_by_the_diffusers_format_only(factory):
    sd = factory().state_dict()
    assert detect_format(sd).build is build_flux_diffusers
    assert not claims_flux_xlabs(sd) and not claims_flux_mistoline(sd)


def test_bfl_named_weights_are_claimed_as_xlabs_and_rebuild_the_same_model():
    ours = _load(tiny_xlabs_style_controlnet())
    sd = ours.state_dict()
    assert detect_format(sd).build is build_flux_xlabs
    assert not claims_flux_diffusers(sd) and not claims_flux_mistoline(sd)
    x, t, context, pooled, _ = flux_inputs(channels=XLABS_LATENT_CHANNELS)
    rebuilt = build_flux_xlabs(sd, axes_dim=AXES_DIM)
    hint = _pixel_hint(x)
    assert all(torch.equal(a, b) for a, b in zip(ours(x, t, context, hint, pooled).tensors,
                                                  rebuilt(x, t, context, hint, pooled).tensors))


def test_bfl_named_weights_without_blocks_are_refused_as_a_damaged_flux_controlnet():
    sd = {k: v for k, v in _load(tiny_xlabs_style_controlnet()).state_dict().items()
          if not k.startswith(("double_blocks.", "single_blocks."))}
    assert detect_format(sd).build is build_flux_xlabs
    with pytest.raises(ControlNetFormatError, match="Flux ControlNet weights without transformer blocks"):
        load_controlnet(sd)


def test_sd3_and_unet_controlnets_are_not_claimed_as_flux():
    torch.manual_seed(0)
    sd3_base = SD3Transformer2DModel(sample_size=4, patch_size=1, in_channels=4, out_channels=4, num_layers=2,
                                     attention_head_dim=4, num_attention_heads=2, caption_projection_dim=8,
                                     joint_attention_dim=8, pooled_projection_dim=8)
    sd3 = SD3ControlNetModel.from_transformer(sd3_base, num_layers=1, load_weights_from_transformer=False)
    for sd in (sd3.state_dict(), tiny_sd15_diffusers(randomize=False).state_dict()):
        assert not any(claims(sd) for claims in (claims_flux_diffusers, claims_flux_xlabs, claims_flux_mistoline))


def test_weights_with_a_missing_residual_projection_are_refused():
    sd = dict(tiny_flux_controlnet().state_dict())
    del sd["controlnet_single_blocks.1.weight"], sd["controlnet_single_blocks.1.bias"]
    with pytest.raises(ControlNetFormatError, match="residual projection"):
        load_controlnet(sd, axes_dim=AXES_DIM)


def test_a_token_mask_weights_each_token_by_the_mask_under_its_diffusers_position():
    x = torch.zeros(1, LATENT_CHANNELS, 8, 6)
    per_token = torch.rand(4, 3, generator=torch.Generator().manual_seed(0))
    mask = per_token.repeat_interleave(16, 0).repeat_interleave(16, 1)[None, None]  # 16 pixels per token side
    rows, cols = image_ids(x)[:, 1].long(), image_ids(x)[:, 2].long()
    assert torch.allclose(mask_tokens(mask, token_grid((8, 6)))[0, :, 0], per_token[rows, cols], atol=1e-6)
