"""ControlNet Union equals diffusers' ControlNetUnionModel row by row, for one and for several types."""
import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import diffusers_to_original, load_controlnet, read_state_dict
from cnr_pack.controlnet_core.families.union.format import build, claims
from cnr_pack.controlnet_core.families.union.model import UNION_TYPE_NAMES, UnionControlNet
from tiny_models import TIME_EMBED_DIM, sdxl_y, tiny_sdxl_diffusers
from tiny_union import FUSION_PREFIXES, tiny_union_diffusers, union_inputs

TOL = 1e-5


def _diffusers_row(reference, row, types, x, t, context, hints, text, time_ids):
    """One batch row through diffusers, so its batch-axis attention sees a single row."""
    s = slice(row, row + 1)
    one_hot = torch.zeros(1, reference.config.num_control_type)
    one_hot[0, list(types)] = 1.0
    down, mid = reference(x[s], t[s], context[s], [h[s] for h in hints], one_hot, list(types),
                          added_cond_kwargs={"text_embeds": text[s], "time_ids": time_ids[s]}, return_dict=False)
    return list(down) + [mid]


def _max_row_diff(ours, theirs, row):
    return max((a[row:row + 1] - b).abs().max().item() for a, b in zip(ours.tensors, theirs))


@pytest.mark.parametrize("types", [(1,), (3, 0), (7, 2)], ids=["depth", "canny+openpose", "repaint+hed"])
def test_union_matches_diffusers_row_by_row(types):
    reference = tiny_union_diffusers()
    ours = build(reference.state_dict())
    x, t, context, hints, text, time_ids = union_inputs()
    hints = hints[:len(types)]
    with torch.no_grad():
        res = ours(x, t, context, list(hints), y=sdxl_y(text, time_ids), control_type=list(types))
        for row in range(x.shape[0]):
            theirs = _diffusers_row(reference, row, types, x, t, context, hints, text, time_ids)
            assert theirs[-1].abs().max() > 1e-3, "random weights must give non-zero residuals"
            assert _max_row_diff(res, theirs, row) <= TOL
    assert len(res.output) == 9 and len(res.middle) == 1


def test_union_two_types_in_one_pass_differ_from_either_type_alone():
    ours = build(tiny_union_diffusers().state_dict())
    x, t, context, hints, text, time_ids = union_inputs()
    y = sdxl_y(text, time_ids)
    with torch.no_grad():
        both = ours(x, t, context, list(hints), y=y, control_type=[3, 0]).middle[0]
        alone = [ours(x, t, context, h, y=y, control_type=i).middle[0] for h, i in zip(hints, (3, 0))]
    assert all((both - a).abs().max() > 1e-3 for a in alone)


def test_union_rows_never_mix_across_the_batch():
    ours = build(tiny_union_diffusers().state_dict())
    x, t, context, hints, text, time_ids = union_inputs()
    y = sdxl_y(text, time_ids)
    with torch.no_grad():
        batched = ours(x, t, context, hints[0], y=y, control_type=1)
        row = ours(x[1:], t[1:], context[1:], hints[0][1:], y=y[1:], control_type=1)
    assert all(torch.allclose(a[1:], b, atol=1e-6) for a, b in zip(batched.tensors, row.tensors))


def test_union_cached_hint_embedding_gives_the_same_residuals():
    ours = build(tiny_union_diffusers().state_dict())
    x, t, context, hints, text, time_ids = union_inputs()
    y = sdxl_y(text, time_ids)
    with torch.no_grad():
        fresh = ours(x, t, context, list(hints), y=y, control_type=(2, 5))
        cached = ours(x, t, context, list(hints), y=y, control_type=(2, 5),
                      hint_embedding=ours.embed_hint(list(hints), control_type=(2, 5)))
    assert all(torch.equal(a, b) for a, b in zip(fresh.tensors, cached.tensors))


@pytest.mark.parametrize("num_types", [6, 8])
def test_union_type_count_and_names_come_from_task_embedding_rows(num_types):
    ours = build(tiny_union_diffusers(num_types).state_dict())
    assert isinstance(ours, UnionControlNet)
    assert ours.config.num_control_types == num_types
    assert ours.type_names == UNION_TYPE_NAMES[:num_types]
    assert ours.config.type_embed_dim == TIME_EMBED_DIM
    assert ours.config.family == "sdxl"


def test_union_detection_claims_union_and_not_a_plain_controlnet():
    assert claims(tiny_union_diffusers().state_dict())
    assert not claims(tiny_sdxl_diffusers().state_dict())


def test_union_loads_from_safetensors_in_half_precision_to_the_compute_dtype(tmp_path):
    sd = {k: v.half() for k, v in tiny_union_diffusers().state_dict().items()}
    path = tmp_path / "union.safetensors"
    save_file(sd, str(path))
    ours = build(read_state_dict(str(path)), dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in ours.parameters())
    assert torch.equal(ours.task_embedding, sd["task_embedding"].float())


def test_union_encoder_in_the_original_layout_loads_too():
    sd = tiny_union_diffusers().state_dict()
    fusion = {k: v for k, v in sd.items() if k.startswith(FUSION_PREFIXES)}
    original = {**diffusers_to_original({k: v for k, v in sd.items() if k not in fusion}), **fusion}
    x, t, context, hints, text, time_ids = union_inputs()
    y = sdxl_y(text, time_ids)
    with torch.no_grad():
        a = build(sd)(x, t, context, hints[0], y=y, control_type=4)
        b = build(original)(x, t, context, hints[0], y=y, control_type=4)
    assert all(torch.equal(p, q) for p, q in zip(a.tensors, b.tensors))


def test_load_controlnet_builds_a_union_from_its_file(tmp_path):
    reference = tiny_union_diffusers(num_types=6)
    path = tmp_path / "diffusion_pytorch_model.safetensors"
    save_file(reference.state_dict(), str(path))
    ours = load_controlnet(path, dtype=torch.float32)
    assert isinstance(ours, UnionControlNet) and ours.type_names == UNION_TYPE_NAMES[:6]
    x, t, context, hints, text, time_ids = union_inputs(batch=1)
    with torch.no_grad():
        theirs = _diffusers_row(reference, 0, (5,), x, t, context, hints[:1], text, time_ids)
        res = ours(x, t, context, hints[0], y=sdxl_y(text, time_ids), control_type=5)
    assert _max_row_diff(res, theirs, 0) <= TOL
