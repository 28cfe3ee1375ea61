"""Z-Image Fun ControlNets inside ComfyUI's own Z-Image model (0.3.75's NextDiT), whose forward takes no control:
the pack's forward, composed from the model's submodules, equals the model's own call without control, and
with control equals diffusers' ZImageTransformer2DModel given its ZImageControlNetModel's samples (v1), plus the
refiner correction (2.1), on identical weights converted by ComfyUI's own key map; and through the nodes the
model is left as it was after sampling.

ComfyUI's Z-Image arrived after the 2024-03 CI host, so these run only on a current ComfyUI (``COMFYUI_PATH``).
"""
import pytest
import torch

import comfy_host
from cnr_pack.controlnet_core.families.z_image.model import position_ids
from cnr_pack.controlnet_core.loading.registry import load_controlnet
from tiny_z_image import (VERSIONS, WIDE_AXES_DIM, base_stages, diffusers_denoise,
                          diffusers_skips, inputs, release_state_dict, tiny_controlnet)

pytestmark = [pytest.mark.comfy, pytest.mark.skipif(
    not comfy_host.is_current_host(),
    reason="ComfyUI's Z-Image needs a current ComfyUI: set COMFYUI_PATH to run the Z-Image parity tests")]

REL_TOL = 1e-4


def _rel(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def _staged(net, context, batch, scales=None, rows=None):
    from cnr_pack.nodes.bindings.binding import StagedControl
    rows = torch.arange(batch) if rows is None else rows
    with torch.no_grad():
        embedding = net.embed_hint(context)[rows]
    return StagedControl(net=net, embedding=embedding, rows=rows, row_scale=torch.ones(len(rows)),
                         scales=tuple(scales or (1.0,) * net.num_residuals), token_weights=None, attention=None)


def _forward(model, staged, x, t, caption):
    from cnr_pack.nodes.bindings.binding import STAGED_KEY
    from cnr_pack.nodes.bindings.z_image import controlled_forward
    with torch.no_grad():
        return controlled_forward(model.model.diffusion_model, x, 1.0 - t, caption, None, {STAGED_KEY: tuple(staged)})


def _ours(version, transformer):
    reference = tiny_controlnet(version, transformer)
    places = VERSIONS[version]["control_layers_places"]
    return reference, load_controlnet(release_state_dict(version, reference), places=places, axes_dim=WIDE_AXES_DIM)


def test_without_control_the_composed_forward_equals_comfyuis_model_call(model, transformer):
    x, t, caption, _ = inputs("1.0")
    with torch.no_grad():
        theirs = model.model.diffusion_model(x, 1.0 - t, caption, caption.shape[1])
    ours = _forward(model, (), x, t, caption)
    assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def test_with_zero_strength_the_composed_forward_equals_comfyuis_model_call(model, transformer):
    _, net = _ours("2.1", transformer)
    x, t, caption, context = inputs("2.1")
    with torch.no_grad():
        theirs = model.model.diffusion_model(x, 1.0 - t, caption, caption.shape[1])
    ours = _forward(model, (_staged(net, context, 2, scales=(0.0,) * net.num_residuals),), x, t, caption)
    assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def test_comfyuis_model_equals_diffusers_transformer_on_the_converted_weights(model, transformer):
    x, t, caption, _ = inputs("1.0")
    with torch.no_grad():
        theirs = model.model.diffusion_model(x, 1.0 - t, caption, caption.shape[1])
    # ComfyUI's Z-Image returns the negated velocity of diffusers' transformer at time 1 - t.
    assert _rel(-theirs, diffusers_denoise(transformer, x, t, caption)) <= REL_TOL


def test_v1_in_comfyuis_model_equals_diffusers_transformer_given_its_controlnets_samples(model, transformer):
    reference, net = _ours("1.0", transformer)
    x, t, caption, context = inputs("1.0")
    expected = diffusers_denoise(transformer, x, t, caption, diffusers_skips(reference, x, t, caption, context))
    got = -_forward(model, (_staged(net, context, 2),), x, t, caption)
    assert _rel(expected, diffusers_denoise(transformer, x, t, caption)) > 1e-2, "the control must act"
    assert _rel(got, expected) <= REL_TOL


def _refiner_hints(reference, transformer, x, t, caption, context, net):
    """2.x refiner skips from diffusers' own control blocks (the ControlNet keeps them to itself)."""
    with torch.no_grad():
        x0, _, adaln, grid = base_stages(transformer, x, t, caption)
        ids = position_ids(32, grid, x0.shape[1])[1].long()
        freqs = transformer.rope_embedder(ids)[None].expand(x.shape[0], -1, -1)
        c = net.stream_start(net.embed_hint(context), transformer.x_pad_token, x0.shape[1])
        for block in reference.control_noise_refiner:
            c = block(c, x0, None, freqs, adaln)
    return torch.unbind(c)[:2]


def test_2_1_in_comfyuis_model_equals_diffusers_plus_the_refiner_correction(model, transformer):
    reference, net = _ours("2.1", transformer)
    x, t, caption, context = inputs("2.1")
    samples = diffusers_skips(reference, x, t, caption, context)
    hints = _refiner_hints(reference, transformer, x, t, caption, context, net)
    # The correction: the refiner skips go into the transformer's noise refiner, as the reference adds them.
    handles = [block.register_forward_hook(lambda _m, _a, out, h=h: out + h)
               for block, h in zip(transformer.noise_refiner, hints)]
    try:
        expected = diffusers_denoise(transformer, x, t, caption, samples)
    finally:
        for handle in handles:
            handle.remove()
    uncorrected = diffusers_denoise(transformer, x, t, caption, samples)
    got = -_forward(model, (_staged(net, context, 2),), x, t, caption)
    assert _rel(uncorrected, expected) > 1e-3, "the correction must matter"
    assert _rel(got, expected) <= REL_TOL


def test_a_control_on_some_rows_leaves_the_others_as_the_model_computes_them(model, transformer):
    _, net = _ours("2.1", transformer)
    x, t, caption, context = inputs("2.1")
    with torch.no_grad():
        plain = model.model.diffusion_model(x, 1.0 - t, caption, caption.shape[1])
    both = _forward(model, (_staged(net, context, 2),), x, t, caption)
    first = _forward(model, (_staged(net, context, 2, rows=torch.tensor([0])),), x, t, caption)
    assert _rel(first[0], both[0]) <= REL_TOL and _rel(first[1], plain[1]) <= 1e-5


def test_the_patches_read_comfyuis_rotary_matrices_as_the_cores_rotation(model):
    from cnr_pack.controlnet_core.layers.rotary import rope_frequencies
    from cnr_pack.nodes.bindings.z_image_patches import rope_from_matrices
    _, ids = position_ids(32, (4, 6), 32)
    embedder = model.model.diffusion_model.rope_embedder
    cos, sin = rope_from_matrices(embedder(ids[None]).movedim(1, 2))
    expected = rope_frequencies(ids, tuple(embedder.axes_dim), embedder.theta)
    assert (cos - expected[0]).abs().max().item() <= 1e-6 and (sin - expected[1]).abs().max().item() <= 1e-6
