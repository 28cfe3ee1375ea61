"""Z-Image Fun ControlNets: our skips equal diffusers' ZImageControlNetModel for every release's shape, and
diffusers' base transformer given them equals the authors' reference equations."""
import pytest
import torch

from cnr_pack.controlnet_core.families.z_image.model import ZImageControlNet, position_ids
from cnr_pack.controlnet_core.loading.registry import load_controlnet
from tiny_z_image import (AXES_DIM, VERSIONS, as_samples, base_stages, diffusers_denoise, diffusers_skips, inputs,
                          our_skips, release_state_dict, ropes, tiny_controlnet, tiny_transformer)

TOL = 1e-5


@pytest.fixture(scope="module")
def transformer():
    return tiny_transformer()


def _pair(version, transformer):
    reference = tiny_controlnet(version, transformer)
    places = VERSIONS[version]["control_layers_places"]
    ours = load_controlnet(release_state_dict(version, reference), places=places, axes_dim=AXES_DIM)
    return reference, ours


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_every_main_stage_skip_equals_diffusers(version, transformer):
    reference, ours = _pair(version, transformer)
    x, t, caption, context = inputs(version)
    theirs = diffusers_skips(reference, x, t, caption, context)
    _, skips = our_skips(ours, transformer, x, t, caption, context)
    assert isinstance(ours, ZImageControlNet) and ours.config.version == version
    assert sorted(theirs) == list(ours.config.places)
    assert min(s.abs().max().item() for s in skips) > 0.05, "random weights must give non-zero skips"
    for place, skip in zip(ours.config.places, skips):
        assert (skip - theirs[place]).abs().max().item() <= TOL, place


@pytest.mark.parametrize("version", ["2.0", "2.1", "2.1-lite"])
def test_refiner_skips_equal_diffusers_control_blocks_called_directly(version, transformer):
    reference, ours = _pair(version, transformer)
    x, t, caption, context = inputs(version)
    refiner_skips, _ = our_skips(ours, transformer, x, t, caption, context)
    # diffusers' own blocks on the same stream: each returns the stack [skips..., stream].
    with torch.no_grad():
        x0, _, adaln, grid = base_stages(transformer, x, t, caption)
        ids = position_ids(32, grid, x0.shape[1])[1].long()
        freqs = transformer.rope_embedder(ids)[None].expand(x.shape[0], -1, -1)
        c = ours.stream_start(ours.embed_hint(context), transformer.x_pad_token, x0.shape[1])
        blocks = reference.control_layers if version == "2.0" else reference.control_noise_refiner
        for block in blocks:
            c = block(c, x0, None, freqs, adaln)
    theirs = torch.unbind(c)[:2]
    assert len(refiner_skips) == 2
    for ours_skip, their_skip in zip(refiner_skips, theirs):
        assert ours_skip.abs().max().item() > 0.05
        assert (ours_skip - their_skip).abs().max().item() <= TOL


def test_v1_has_no_refiner_skips(transformer):
    _, ours = _pair("1.0", transformer)
    x, t, caption, context = inputs("1.0")
    refiner_skips, _ = our_skips(ours, transformer, x, t, caption, context)
    assert refiner_skips == () and ours.num_residuals == 2


def test_v1_base_given_our_skips_equals_diffusers_given_its_samples(transformer):
    reference, ours = _pair("1.0", transformer)
    x, t, caption, context = inputs("1.0")
    theirs = diffusers_denoise(transformer, x, t, caption, diffusers_skips(reference, x, t, caption, context))
    _, skips = our_skips(ours, transformer, x, t, caption, context)
    mine = diffusers_denoise(transformer, x, t, caption, as_samples(skips, ours.config.places))
    plain = diffusers_denoise(transformer, x, t, caption)
    assert (theirs - plain).abs().max().item() > 1e-2, "the control must change the output"
    assert (mine - theirs).abs().max().item() <= TOL * theirs.abs().max().item()


def test_diffusers_controlnet_hides_the_2x_refiner_skips_from_the_base(transformer):
    # diffusers adds the refiner skips to the ControlNet's private copy of the tokens only: its main-stage
    # skips already assume them, but the transformer never receives them. The reference adds them to the
    # base model's refiner stream, which diffusers' skips plus that one correction reproduce (tested on
    # ComfyUI's model in tests/nodes); here: the correction is not zero.
    _, ours = _pair("2.1", transformer)
    x, t, caption, context = inputs("2.1")
    refiner_skips, _ = our_skips(ours, transformer, x, t, caption, context)
    assert all(s.abs().max().item() > 0.05 for s in refiner_skips)


def test_the_stages_compute_in_the_weights_dtype_whatever_the_base_tokens_are(transformer):
    _, ours = _pair("2.1", transformer)
    half = ours.to(torch.bfloat16)
    x, t, caption, context = inputs("2.1")
    with torch.no_grad():
        x0, cap, adaln, grid = base_stages(transformer, x, t, caption)
        cap_rope, img_rope = ropes(cap.shape[1], grid, x0.shape[1])
        c = half.stream_start(half.embed_hint(context), transformer.x_pad_token, x0.shape[1])
        c, skips = half.refine(c, x0, img_rope, adaln)
        unified = torch.cat((x0, cap), dim=1)
        rope = tuple(torch.cat(pair) for pair in zip(img_rope, cap_rope))
        layer = next(half.layer_skips(c, unified, slice(0, x0.shape[1]), rope, adaln))
    assert {skips[0].dtype, layer.dtype} == {torch.bfloat16} and torch.isfinite(layer).all()
