"""Qwen-Image InstantX ControlNets: our residuals equal diffusers' QwenImageControlNetModel, and diffusers'
base transformer given its controlnet_block_samples equals it given our expanded residuals."""
import pytest
import torch

from cnr_pack.controlnet_core.errors import ControlNetInputError
from cnr_pack.controlnet_core.families.qwen_image.model import QwenImageControlNet, expand_to_base
from cnr_pack.controlnet_core.loading.registry import load_controlnet
from cnr_pack.controlnet_core.residuals import ControlResiduals
from conftest import explicit_softmax_attention
from tiny_qwen import (AXES_DIM, INPAINT_EXTRA, LATENT_CHANNELS, diffusers_denoise, diffusers_residuals,
                       qwen_inputs, tiny_qwen_controlnet, tiny_qwen_transformer)

TOL = 1e-5


def _load(reference) -> QwenImageControlNet:
    return load_controlnet(reference.state_dict(), axes_dim=AXES_DIM)


def _max_diff(ours, theirs) -> float:
    assert len(ours) == len(theirs)
    return max((a - b).abs().max().item() for a, b in zip(ours, theirs))


def _hint(x, channels=LATENT_CHANNELS, seed=7):
    return torch.randn(x.shape[0], channels, *x.shape[-2:], generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def union():
    reference = tiny_qwen_controlnet()
    return reference, _load(reference)


def test_union_residuals_equal_diffusers_block_by_block(union):
    reference, ours = union
    x, t, context = qwen_inputs()
    hint = _hint(x)
    theirs = diffusers_residuals(reference, x, t, context, hint)
    res = ours(x, t, context, hint)
    assert len(res.input) == 2 and not res.output and not res.middle
    assert min(r.abs().max().item() for r in res.tensors) > 0.1, "random weights must give non-zero residuals"
    assert _max_diff(res.tensors, theirs) <= TOL


def test_inpainting_residuals_with_the_mask_channel_equal_diffusers():
    reference = tiny_qwen_controlnet(seed=2, extra_condition_channels=INPAINT_EXTRA)
    ours = _load(reference)
    x, t, context = qwen_inputs(seed=5)
    latent, mask = _hint(x), (torch.rand(x.shape[0], 1, *x.shape[-2:]) > 0.5).float()
    hint = torch.cat((latent, mask), dim=1)
    theirs = diffusers_residuals(reference, x, t, context, hint)
    res = ours(x, t, context, hint)
    assert ours.config.is_inpainting and ours.config.hint_channels == LATENT_CHANNELS + 1
    assert _max_diff(res.tensors, theirs) <= TOL


def test_odd_token_grids_are_centred_like_the_reference(union):
    reference, ours = union
    x, t, context = qwen_inputs(height=6, width=10)  # 3 x 5 tokens: both sides odd
    hint = _hint(x)
    assert _max_diff(ours(x, t, context, hint).tensors, diffusers_residuals(reference, x, t, context, hint)) <= TOL


def test_comfyui_centring_changes_odd_grids_only(union):
    _, ours = union
    comfy = QwenImageControlNet.__new__(QwenImageControlNet)
    comfy.__dict__.update(ours.__dict__)
    comfy.config = type(ours.config)(**{**ours.config.__dict__, "centre": "comfyui"})
    for size, differs in (((6, 10), True), ((8, 12), False)):
        x, t, context = qwen_inputs(height=size[0], width=size[1])
        hint = _hint(x)
        diff = _max_diff(ours(x, t, context, hint).tensors, comfy(x, t, context, hint).tensors)
        assert (diff > 1e-3) == differs, (size, diff)


def test_the_base_given_diffusers_samples_equals_it_given_our_expanded_residuals(union):
    reference, ours = union
    base = tiny_qwen_transformer(num_layers=5)
    x, t, context = qwen_inputs()
    hint = _hint(x)
    samples = diffusers_residuals(reference, x, t, context, hint)
    expected = diffusers_denoise(base, x, t, context, samples)
    expanded = expand_to_base(ours(x, t, context, hint), len(base.transformer_blocks)).input

    def add_residual(index):
        def hook(_module, _args, output):
            text, image = output
            return text, image + expanded[index]
        return hook

    handles = [block.register_forward_hook(add_residual(i)) for i, block in enumerate(base.transformer_blocks)]
    try:
        got = diffusers_denoise(base, x, t, context)
    finally:
        for handle in handles:
            handle.remove()
    assert (expected - diffusers_denoise(base, x, t, context)).abs().max() > 1e-3, "the residuals must matter"
    assert (got - expected).abs().max().item() <= TOL


def test_expand_to_base_repeats_each_residual_over_consecutive_blocks():
    first, second = torch.zeros(1), torch.ones(1)
    expanded = expand_to_base(ControlResiduals(input=(first, second)), 5).input
    assert [id(t) for t in expanded] == [id(first)] * 3 + [id(second)] * 2


def test_expand_to_base_reads_the_block_count_it_is_given_not_sixty():
    residuals = ControlResiduals(input=tuple(torch.full((1,), float(i)) for i in range(5)))
    assert [t.item() for t in expand_to_base(residuals, 7).input] == [0, 0, 1, 1, 2, 2, 3]
    assert len(expand_to_base(residuals, 60).input) == 60


def test_comfyui_one_frame_latents_give_the_same_residuals(union):
    _, ours = union
    x, t, context = qwen_inputs()
    hint = _hint(x)
    flat = ours(x, t, context, hint)
    video = ours(x[:, :, None], t, context, hint[:, :, None])
    assert _max_diff(flat.tensors, video.tensors) == 0


def test_a_precomputed_hint_embedding_gives_the_same_residuals(union):
    _, ours = union
    x, t, context = qwen_inputs()
    hint = _hint(x)
    given = ours(x, t, context, hint, hint_embedding=ours.embed_hint(hint))
    assert _max_diff(given.tensors, ours(x, t, context, hint).tensors) == 0


def test_the_attention_kernel_given_is_the_one_used(union):
    _, ours = union
    x, t, context = qwen_inputs()
    calls = []
    res = ours(x, t, context, _hint(x), attention=explicit_softmax_attention(calls))
    assert len(calls) == 2 and calls[0][-2] == context.shape[1] + x.shape[-2] * x.shape[-1] // 4
    assert _max_diff(res.tensors, ours(x, t, context, _hint(x)).tensors) <= TOL


def test_one_hint_row_serves_every_latent_row(union):
    _, ours = union
    x, t, context = qwen_inputs()
    hint = _hint(x)[:1]
    assert _max_diff(ours(x, t, context, hint).tensors, ours(x, t, context, hint.expand(2, -1, -1, -1)).tensors) == 0


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_weights_are_built_in_the_dtype_asked_for_and_run(union, dtype):
    reference, _ = union
    net = load_controlnet(reference.state_dict(), dtype=dtype, axes_dim=AXES_DIM)
    assert {p.dtype for p in net.parameters()} == {dtype}
    x, t, context = qwen_inputs()
    res = net(x, t, context, _hint(x))
    assert all(r.dtype == dtype and torch.isfinite(r).all() for r in res.tensors)


@pytest.mark.parametrize("hint_shape, message", [
    ((2, LATENT_CHANNELS + 1, 8, 12), r"hint latent must be \(B, 4, h, w\); got \(2, 5, 8, 12\)"),
    ((2, LATENT_CHANNELS, 16, 24), r"must have the latent's size 8x12; got 16x24"),
    ((3, LATENT_CHANNELS, 8, 12), r"hint batch 3 does not match latent batch 2"),
])
def test_a_hint_that_does_not_fit_is_refused_naming_it(union, hint_shape, message):
    _, ours = union
    x, t, context = qwen_inputs()
    with pytest.raises(ControlNetInputError, match=message):
        ours(x, t, context, torch.zeros(hint_shape))


def test_text_tokens_of_another_width_are_refused(union):
    _, ours = union
    x, t, _ = qwen_inputs()
    with pytest.raises(ControlNetInputError, match=r"text tokens must be \(B, T, 16\) for this Qwen-Image ControlNet"):
        ours(x, t, torch.zeros(2, 5, 32), _hint(x))


def test_a_latent_of_several_frames_is_refused(union):
    _, ours = union
    x, t, context = qwen_inputs()
    with pytest.raises(ControlNetInputError, match="latent x has 2 frames"):
        ours(torch.zeros(2, LATENT_CHANNELS, 2, 8, 12), t, context, _hint(x))
