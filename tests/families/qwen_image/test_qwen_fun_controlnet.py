"""Qwen-Image Fun ControlNet Union: our skips equal the reference's equations run on diffusers' Qwen-Image blocks
and embedders, and they land on the base blocks the reference configuration names."""
import pytest
import torch

from cnr_pack.controlnet_core.errors import ControlNetInputError
from cnr_pack.controlnet_core.families.qwen_image.fun import QwenFunBase, place_skips, skip_places
from cnr_pack.controlnet_core.families.qwen_image.fun_hint import fun_hint
from cnr_pack.controlnet_core.loading.registry import load_controlnet
from cnr_pack.controlnet_core.residuals import ControlResiduals
from conftest import explicit_softmax_attention
from tiny_qwen import AXES_DIM, LATENT_CHANNELS, diffusers_denoise, qwen_inputs, tiny_qwen_transformer
from tiny_qwen_fun import fun_weights, reference_skips, tiny_fun_controlnet

TOL = 1e-5


def _base_of(base) -> QwenFunBase:
    return QwenFunBase(img_in=base.img_in, txt_norm=base.txt_norm, txt_in=base.txt_in,
                       time_text_embed=base.time_text_embed)


@pytest.fixture(scope="module")
def setup():
    reference = tiny_fun_controlnet(depth=2)
    base = tiny_qwen_transformer(num_layers=5)
    ours = load_controlnet(fun_weights(reference), axes_dim=AXES_DIM).with_base(_base_of(base))
    return reference, base, ours


def _max_diff(ours, theirs) -> float:
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


def _latent(x, channels=LATENT_CHANNELS, seed=7):
    return torch.randn(x.shape[0], channels, *x.shape[-2:], generator=torch.Generator().manual_seed(seed))


def test_skips_equal_the_reference_equations_on_diffusers_blocks(setup):
    reference, base, ours = setup
    x, t, context = qwen_inputs()
    mask = (torch.rand(x.shape[0], 1, *x.shape[-2:], generator=torch.Generator().manual_seed(1)) > 0.5).float()
    hint = torch.cat((_latent(x), mask, _latent(x, seed=8)), dim=1)
    res = ours(x, t, context, hint)
    theirs = reference_skips(base, reference, x, t, context, hint)
    assert len(res.input) == 2 and not res.output and not res.middle
    assert min(r.abs().max().item() for r in res.tensors) > 0.1, "random weights must give non-zero skips"
    assert _max_diff(res.tensors, theirs) <= TOL


def test_a_control_latent_alone_is_the_hint_with_zero_mask_and_inpaint_channels(setup):
    reference, base, ours = setup
    x, t, context = qwen_inputs(seed=4)
    control = _latent(x)
    padded = torch.cat((control, torch.zeros(x.shape[0], LATENT_CHANNELS + 1, *x.shape[-2:])), dim=1)
    assert _max_diff(ours(x, t, context, control).tensors, reference_skips(base, reference, x, t, context, padded)) \
        <= TOL


def test_odd_token_grids_are_centred_like_the_reference(setup):
    reference, base, ours = setup
    x, t, context = qwen_inputs(height=6, width=10)  # 3 x 5 tokens
    hint = fun_hint(_latent(x))
    assert _max_diff(ours(x, t, context, hint).tensors, reference_skips(base, reference, x, t, context, hint)) <= TOL


def test_the_skips_depend_on_the_base_models_embedders(setup):
    reference, _, ours = setup
    other = ours.with_base(_base_of(tiny_qwen_transformer(seed=9, num_layers=1)))
    x, t, context = qwen_inputs()
    hint = fun_hint(_latent(x))
    assert _max_diff(ours(x, t, context, hint).tensors, other(x, t, context, hint).tensors) > 1e-3


def test_a_precomputed_hint_embedding_gives_the_same_skips(setup):
    _, _, ours = setup
    x, t, context = qwen_inputs()
    hint = fun_hint(_latent(x))
    given = ours(x, t, context, hint, hint_embedding=ours.embed_hint(hint))
    assert _max_diff(given.tensors, ours(x, t, context, hint).tensors) == 0


def test_comfyui_one_frame_latents_give_the_same_skips(setup):
    _, _, ours = setup
    x, t, context = qwen_inputs()
    hint = fun_hint(_latent(x))
    assert _max_diff(ours(x[:, :, None], t, context, hint[:, :, None]).tensors,
                     ours(x, t, context, hint).tensors) == 0


def test_the_attention_kernel_given_is_the_one_used(setup):
    _, _, ours = setup
    x, t, context = qwen_inputs()
    calls = []
    hint = fun_hint(_latent(x))
    res = ours(x, t, context, hint, attention=explicit_softmax_attention(calls))
    assert len(calls) == 2
    assert _max_diff(res.tensors, ours(x, t, context, hint).tensors) <= TOL


def test_the_loaded_controlnet_keeps_no_base_and_refuses_to_run_without_one(setup):
    reference, _, ours = setup
    loaded = load_controlnet(fun_weights(reference), axes_dim=AXES_DIM)
    x, t, context = qwen_inputs()
    assert ours.base is not None and loaded.base is None
    with pytest.raises(ControlNetInputError, match="take it with with_base"):
        loaded(x, t, context, _latent(x))


def test_a_view_shares_every_weight_with_the_loaded_controlnet(setup):
    reference, base, _ = setup
    loaded = load_controlnet(fun_weights(reference), axes_dim=AXES_DIM)
    view = loaded.with_base(_base_of(base)).with_config(strength_curve="comfyui_sqrt")
    assert all(a is b for a, b in zip(view.parameters(), loaded.parameters()))
    assert loaded.config.strength_curve == "linear" and view.config.strength_curve == "comfyui_sqrt"
    assert len(list(view.parameters())) == len(list(loaded.parameters())), "the base is not a submodule"


@pytest.mark.parametrize("hint_shape, message", [
    ((2, LATENT_CHANNELS + 1, 8, 12), r"hint must be \(B, 9, h, w\) .* or the control latent alone \(B, 4, h, w\)"),
    ((2, 2 * LATENT_CHANNELS + 1, 16, 24), r"must have the latent's size 8x12; got 16x24"),
    ((3, 2 * LATENT_CHANNELS + 1, 8, 12), r"hint batch 3 does not match latent batch 2"),
])
def test_a_hint_that_does_not_fit_is_refused_naming_it(setup, hint_shape, message):
    _, _, ours = setup
    x, t, context = qwen_inputs()
    with pytest.raises(ControlNetInputError, match=message):
        ours(x, t, context, torch.zeros(hint_shape))


def test_skips_sit_every_base_count_over_n_blocks_from_block_zero():
    assert skip_places(5, 60) == (0, 12, 24, 36, 48)
    assert skip_places(2, 5) == (0, 2)
    assert skip_places(3, 3) == (0, 1, 2)


def test_a_base_with_fewer_blocks_than_skips_is_refused():
    with pytest.raises(ValueError, match="needs a base model with at least as many transformer blocks; this one has 4"):
        skip_places(5, 4)


def test_placed_skips_leave_every_other_block_empty():
    skips = tuple(torch.full((1,), float(i)) for i in range(5))
    placed = place_skips(ControlResiduals(input=skips), 60).input
    assert len(placed) == 60
    assert [i for i, t in enumerate(placed) if t is not None] == [0, 12, 24, 36, 48]
    assert [placed[i] for i in (0, 12, 24, 36, 48)] == list(skips)


def test_the_base_given_placed_skips_equals_the_reference_adding_them_after_its_blocks(setup):
    reference, base, ours = setup
    x, t, context = qwen_inputs()
    hint = fun_hint(_latent(x))
    skips = reference_skips(base, reference, x, t, context, hint)
    placed = place_skips(ours(x, t, context, hint), len(base.transformer_blocks)).input
    places = {0: skips[0], 2: skips[1]}  # 2 skips over 5 base blocks

    def run(adds):
        def add(index):
            def hook(_module, _args, output):
                text, image = output
                return (text, image + adds[index]) if index in adds else output
            return hook
        handles = [block.register_forward_hook(add(i)) for i, block in enumerate(base.transformer_blocks)]
        try:
            return diffusers_denoise(base, x, t, context)
        finally:
            for handle in handles:
                handle.remove()

    expected = run(places)
    got = run({i: r for i, r in enumerate(placed) if r is not None})
    assert (expected - run({})).abs().max() > 1e-3, "the skips must matter"
    assert (got - expected).abs().max().item() <= TOL


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_in_another_dtype_than_the_base_run_in_their_own(setup, dtype):
    reference, base, _ = setup
    net = load_controlnet(fun_weights(reference), dtype=dtype, axes_dim=AXES_DIM).with_base(_base_of(base))
    assert {p.dtype for p in net.parameters()} == {dtype}
    x, t, context = qwen_inputs()
    res = net(x, t, context, fun_hint(_latent(x)))
    assert all(r.dtype == dtype and torch.isfinite(r).all() for r in res.tensors)
