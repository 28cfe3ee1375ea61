"""SD3 / SD3.5 ControlNets equal diffusers' SD3ControlNetModel, and their expansion equals SD3Transformer2DModel's."""
import pytest
import torch
from diffusers import FluxControlNetModel

from cnr_pack.controlnet_core.errors import ControlNetFormatError
from cnr_pack.controlnet_core.errors import ControlNetInputError
from cnr_pack.controlnet_core.residuals import ControlResiduals
from cnr_pack.controlnet_core.families.sd3.joints import expand_to_joint_blocks, joint_block_indices
from cnr_pack.controlnet_core.families.sd3.format import build_instantx, build_sd35, claims_instantx, claims_sd35
from cnr_pack.controlnet_core.families.sd3.hint import sd35_hint_pixels
from conftest import explicit_softmax_attention
from tiny_models import tiny_sd15_diffusers
from tiny_sd3 import (HEAD_DIM, sd3_inputs, sd35_reference_state_dict, tiny_instantx, tiny_sd3_transformer,
                      tiny_sd35)

TOL = 1e-5

INSTANTX_VARIANTS = {
    "plain": {},
    "inpaint-17-channels": {"extra_channels": 1},
    "rms-qk-norm": {"qk_norm": "rms_norm"},
    "dual-attention": {"num_layers": 3, "qk_norm": "rms_norm", "dual_attention_layers": (0, 2)},
}


def _state_dict(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _max_diff(ours, theirs):
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


def _instantx_pair(**variant):
    reference = tiny_instantx(**variant)
    return reference, build_instantx(_state_dict(reference), attention_head_dim=HEAD_DIM)


def _sd35_trio(num_layers=2, base_layers=5, names="reference"):
    base = tiny_sd3_transformer(num_layers=base_layers, qk_norm="rms_norm")
    reference = tiny_sd35(base, num_layers=num_layers)
    sd = sd35_reference_state_dict(reference) if names == "reference" else \
        {k: v for k, v in _state_dict(reference).items() if not k.startswith("pos_embed.")}
    ours = build_sd35(sd, attention_head_dim=HEAD_DIM)
    ours = ours.with_base_embedder(_state_dict(base))
    return base, reference, ours


@pytest.mark.parametrize("variant", list(INSTANTX_VARIANTS))
def test_instantx_residuals_equal_diffusers_with_zeroed_pooled_vector(variant):
    reference, ours = _instantx_pair(**INSTANTX_VARIANTS[variant])
    x, t, context, pooled, hint = sd3_inputs()
    hint = torch.cat([hint, torch.rand_like(hint[:, :1])], 1) if ours.config.hint_channels == 17 else hint
    with torch.no_grad():
        # The pipeline zeroes the pooled vector for these models (force_zeros_for_pooled_projection).
        theirs = reference(x, hint, encoder_hidden_states=context, pooled_projections=torch.zeros_like(pooled),
                           timestep=t, return_dict=False)[0]
        res = ours(x, t, context, hint, y=pooled)
    assert min(r.abs().max().item() for r in theirs) > 1e-3, "random weights must give non-zero residuals"
    assert _max_diff(res.tensors, theirs) <= TOL


@pytest.mark.parametrize("names", ["reference", "diffusers"])
def test_sd35_residuals_equal_diffusers_with_the_base_models_embedder(names):
    _, reference, ours = _sd35_trio(names=names)
    x, t, _, pooled, hint = sd3_inputs()
    with torch.no_grad():
        theirs = reference(x, hint, pooled_projections=pooled, timestep=t, return_dict=False)[0]
        res = ours(x, t, None, hint, y=pooled)
    assert min(r.abs().max().item() for r in theirs) > 1e-3
    assert _max_diff(res.tensors, theirs) <= TOL


def _padded(expanded, num_blocks, like):
    """Per-block list for diffusers: with L entries its interval is 1, so entry i lands after block i."""
    tail = [torch.zeros_like(like)] * (num_blocks - len(expanded.output))
    return list(expanded.output) + tail


@pytest.mark.parametrize("base_layers,cn_layers", [(4, 2), (5, 2), (5, 3), (3, 3), (2, 3)])
def test_transformer_with_our_expansion_equals_transformer_with_diffusers_residual_list(base_layers, cn_layers):
    base = tiny_sd3_transformer(num_layers=base_layers)
    reference, ours = _instantx_pair(num_layers=cn_layers)
    x, t, context, pooled, hint = sd3_inputs()
    with torch.no_grad():
        theirs = reference(x, hint, encoder_hidden_states=context, pooled_projections=torch.zeros_like(pooled),
                           timestep=t, return_dict=False)[0]
        res = ours(x, t, context, hint)
        expected = base(x, context, pooled, t, block_controlnet_hidden_states=theirs, return_dict=False)[0]
        # The mapping alone, on diffusers' own tensors: bit-identical.
        mapped = expand_to_joint_blocks(ControlResiduals(output=tuple(theirs)), base_layers, "instantx")
        exact = base(x, context, pooled, t, block_controlnet_hidden_states=_padded(mapped, base_layers, theirs[0]),
                     return_dict=False)[0]
        ours_out = base(x, context, pooled, t, return_dict=False,
                        block_controlnet_hidden_states=_padded(
                            expand_to_joint_blocks(res, base_layers, "instantx"), base_layers, theirs[0]))[0]
        without = base(x, context, pooled, t, return_dict=False)[0]
    assert (expected - without).abs().max() > 1e-3, "the residuals must change the output"
    assert torch.equal(exact, expected)
    assert (ours_out - expected).abs().max().item() <= TOL


def test_sd35_transformer_with_our_expansion_equals_diffusers():
    base, reference, ours = _sd35_trio(num_layers=2, base_layers=5)
    x, t, context, pooled, hint = sd3_inputs()
    with torch.no_grad():
        theirs = reference(x, hint, pooled_projections=pooled, timestep=t, return_dict=False)[0]
        expected = base(x, context, pooled, t, block_controlnet_hidden_states=theirs, return_dict=False)[0]
        expanded = expand_to_joint_blocks(ours(x, t, None, hint, y=pooled), 5, "sd35")
        got = base(x, context, pooled, t, block_controlnet_hidden_states=_padded(expanded, 5, theirs[0]),
                   return_dict=False)[0]
    assert (got - expected).abs().max().item() <= TOL


def test_comfyui_rule_equals_diffusers_but_feeds_sd35_last_block_when_residuals_divide_the_depth():
    for blocks, n in [(24, 6), (24, 12), (38, 19), (38, 2)]:
        diffusers = joint_block_indices(n, blocks, "sd35")
        assert joint_block_indices(n, blocks, "instantx", "comfyui") == diffusers
        assert joint_block_indices(n, blocks, "sd35", "comfyui") == diffusers + (n - 1,)


def test_comfyui_instantx_rule_leaves_trailing_blocks_empty_when_residuals_do_not_divide_the_depth():
    comfy = joint_block_indices(5, 24, "instantx", "comfyui")
    assert len(comfy) == 5 * (24 // 5) - 1 < len(joint_block_indices(5, 24, "instantx"))


def test_cached_hint_embedding_and_single_hint_broadcast_give_the_same_residuals():
    _, ours = _instantx_pair()
    x, t, context, _, hint = sd3_inputs()
    one = hint[:1]
    with torch.no_grad():
        full = ours(x, t, context, one.expand(2, -1, -1, -1))
        broadcast = ours(x, t, context, one)
        cached = ours(x, t, context, one, hint_embedding=ours.embed_hint(one))
    assert _max_diff(cached.tensors, broadcast.tensors) == 0.0
    assert _max_diff(broadcast.tensors, full.tensors) <= 1e-6


@pytest.mark.parametrize("layout", ["instantx", "sd35"])
def test_every_attention_goes_through_the_given_kernel_with_the_same_result(layout):
    ours = _instantx_pair()[1] if layout == "instantx" else _sd35_trio()[2]
    x, t, context, pooled, hint = sd3_inputs()
    calls = []
    with torch.no_grad():
        default = ours(x, t, context, hint, y=pooled)
        routed = ours(x, t, context, hint, y=pooled, attention=explicit_softmax_attention(calls))
    assert len(calls) == ours.config.num_layers
    assert _max_diff(routed.tensors, default.tensors) <= 1e-5


def test_sd35_forward_without_the_base_embedder_says_how_to_fix_it():
    reference = tiny_sd35(tiny_sd3_transformer())
    ours = build_sd35(sd35_reference_state_dict(reference), attention_head_dim=HEAD_DIM)
    x, t, _, pooled, hint = sd3_inputs()
    with pytest.raises(ControlNetInputError, match="with_base_embedder"):
        ours(x, t, None, hint, y=pooled)


def test_sd35_stored_control_type_is_read():
    reference = tiny_sd35(tiny_sd3_transformer())
    assert build_sd35(sd35_reference_state_dict(reference, control_type=2),
                      attention_head_dim=HEAD_DIM).config.control_type == 2


def test_each_layout_is_claimed_by_its_own_entry_only():
    instantx = _state_dict(tiny_instantx())
    sd35_reference = sd35_reference_state_dict(tiny_sd35(tiny_sd3_transformer()))
    sd35_diffusers = {k: v for k, v in _state_dict(tiny_sd35(tiny_sd3_transformer())).items()
                      if not k.startswith("pos_embed.")}
    assert claims_instantx(instantx) and not claims_sd35(instantx)
    for sd in (sd35_reference, sd35_diffusers):
        assert claims_sd35(sd) and not claims_instantx(sd)


def test_unet_and_flux_controlnets_are_not_claimed():
    flux = FluxControlNetModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                               num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                               axes_dims_rope=[4, 4, 8])
    for sd in (_state_dict(tiny_sd15_diffusers()), _state_dict(flux)):
        assert not claims_instantx(sd) and not claims_sd35(sd)


def test_instantx_without_position_table_is_refused_with_the_fix():
    sd = _state_dict(tiny_instantx())
    del sd["pos_embed.pos_embed"]
    with pytest.raises(ControlNetFormatError, match="save_pretrained"):
        build_instantx(sd, attention_head_dim=HEAD_DIM)


def test_default_64_channel_heads_are_refused_for_narrower_models():
    with pytest.raises(ControlNetFormatError, match="attention_head_dim"):
        build_instantx(_state_dict(tiny_instantx()))


def test_sd35_variant_with_pre_embedded_pooled_vector_is_refused():
    sd = sd35_reference_state_dict(tiny_sd35(tiny_sd3_transformer()))
    dim = sd["controlnet_blocks.0.weight"].shape[0]
    sd["time_text_embed.text_embedder.linear_1.weight"] = torch.zeros(dim, dim)
    with pytest.raises(ControlNetFormatError, match="2B"):
        build_sd35(sd, attention_head_dim=HEAD_DIM)


def test_base_embedder_of_another_width_is_refused():
    base = tiny_sd3_transformer()
    reference = tiny_sd35(base)
    ours = build_sd35(sd35_reference_state_dict(reference), attention_head_dim=HEAD_DIM)
    sd = _state_dict(base)
    sd["pos_embed.proj.weight"] = sd["pos_embed.proj.weight"][:16]
    with pytest.raises(ValueError, match="width"):
        ours = ours.with_base_embedder(sd)


def test_sd35_canny_pixels_reach_the_encoder_as_the_model_cards_processor_feeds_them():
    from diffusers.image_processor import VaeImageProcessor
    from PIL import Image
    edges = torch.rand(16, 24, generator=torch.Generator().manual_seed(0)).gt(0.8).float()
    image = Image.fromarray((edges * 255).byte().numpy()).convert("RGB")
    # The model card's SD3CannyImageProcessor: 0..1 pixels (no normalisation), then * 255 * 0.5 + 0.5.
    card = VaeImageProcessor(do_normalize=False).preprocess(image) * 255 * 0.5 + 0.5
    ours = sd35_hint_pixels(VaeImageProcessor(do_normalize=False).preprocess(image), 1)
    assert torch.allclose(ours * 2 - 1, card, atol=1e-4)  # the VAE's own 2p - 1


@pytest.mark.parametrize("layout", ["instantx", "sd35"])
def test_both_layouts_load_from_safetensors_files_through_the_format_table(layout, tmp_path):
    from safetensors.torch import save_file

    from cnr_pack.controlnet_core import load_controlnet
    if layout == "instantx":
        reference = tiny_instantx()
        sd = _state_dict(reference)
    else:
        base = tiny_sd3_transformer()
        reference = tiny_sd35(base)
        sd = sd35_reference_state_dict(reference)
    path = tmp_path / "controlnet.safetensors"
    save_file(sd, str(path))
    ours = load_controlnet(path, attention_head_dim=HEAD_DIM)
    assert ours.config.layout == layout
    x, t, context, pooled, hint = sd3_inputs()
    with torch.no_grad():
        if layout == "instantx":
            theirs = reference(x, hint, encoder_hidden_states=context, pooled_projections=torch.zeros_like(pooled),
                               timestep=t, return_dict=False)[0]
            res = ours(x, t, context, hint)
        else:
            ours = ours.with_base_embedder(_state_dict(base))
            theirs = reference(x, hint, pooled_projections=pooled, timestep=t, return_dict=False)[0]
            res = ours(x, t, None, hint, y=pooled)
    assert _max_diff(res.tensors, theirs) <= TOL
