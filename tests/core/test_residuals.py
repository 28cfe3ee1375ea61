"""The residual container and its batch helpers, without ComfyUI."""
import pytest
import torch

from cnr_pack.controlnet_core.residuals import (ControlResiduals, check_same_layout, merge_control, scatter_residuals,
                                                tile_rows)


def _t(value, shape=(2, 3, 4, 4)):
    return torch.full(shape, float(value))


def unet_like():
    return ControlResiduals(output=(_t(1), _t(2)), middle=(_t(3),))


def adapter_like():
    return ControlResiduals(input=(None, _t(4), None, _t(5)), middle=(_t(6),))


def test_tensors_list_input_then_output_then_middle_skipping_empty_slots():
    res = ControlResiduals(input=(None, _t(1)), output=(_t(2),), middle=(_t(3),))
    assert [t[0, 0, 0, 0].item() for t in res.tensors] == [1.0, 2.0, 3.0]


def test_with_tensors_keeps_the_layout_including_empty_input_slots():
    res = adapter_like().with_tensors([_t(7), _t(8), _t(9)])
    assert res.input[0] is None and res.input[2] is None
    assert [t[0, 0, 0, 0].item() for t in res.tensors] == [7.0, 8.0, 9.0]


def test_with_tensors_refuses_a_different_count():
    with pytest.raises(ValueError, match="2 tensors for a layout of 3"):
        unet_like().with_tensors([_t(0), _t(0)])


def test_residuals_compare_by_identity_not_by_tensor_values():
    a = unet_like()
    assert a == a and a != unet_like()


def test_merge_into_an_empty_control_dict_gives_comfyui_lists():
    merged = merge_control(None, unet_like())
    assert [t[0, 0, 0, 0].item() for t in merged["output"]] == [1.0, 2.0]
    assert len(merged["middle"]) == 1 and merged["input"] == []


def test_merge_adds_to_another_controls_residuals_and_leaves_its_lists_untouched():
    theirs = {"output": [_t(10), None], "middle": [_t(20)], "input": []}
    before = {k: list(v) for k, v in theirs.items()}
    merged = merge_control(theirs, unet_like())
    assert [t[0, 0, 0, 0].item() for t in merged["output"]] == [11.0, 2.0]
    assert merged["middle"][0][0, 0, 0, 0].item() == 23.0
    assert all(a is b for k in theirs for a, b in zip(theirs[k], before[k]))
    assert theirs["output"][0][0, 0, 0, 0].item() == 10.0


def test_merge_stores_input_deepest_first_for_models_that_pop_it():
    merged = merge_control(None, adapter_like())
    popped = [merged["input"].pop() for _ in range(4)]
    assert popped[0] is None and popped[1][0, 0, 0, 0].item() == 4.0 and popped[3][0, 0, 0, 0].item() == 5.0


def test_merge_keeps_input_in_block_order_for_models_that_index_it():
    merged = merge_control(None, adapter_like(), input_popped=False)
    assert merged["input"][1][0, 0, 0, 0].item() == 4.0 and merged["input"][3][0, 0, 0, 0].item() == 5.0


def test_merge_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError, match="different models"):
        merge_control({"output": [_t(1)] * 3}, unet_like())


def test_merge_pads_the_shorter_list_at_the_end_for_models_that_index_it():
    """ComfyUI spreads SD3.5 residuals over every joint block, diffusers' rule over all but the last."""
    merged = merge_control({"output": [_t(1)] * 3}, ControlResiduals(output=(_t(2),) * 2), input_popped=False)
    assert [t[0, 0, 0, 0].item() for t in merged["output"]] == [3.0, 3.0, 1.0]


def test_merge_keeps_the_dtype_of_the_residuals_already_there():
    theirs = {"output": [_t(1).half(), _t(1).half()]}
    assert merge_control(theirs, unet_like())["output"][0].dtype == torch.float16


def test_tile_rows_repeats_one_row_for_every_chunk():
    assert tile_rows(_t(1, (1, 2)), per_chunk=3, chunks=2, what="hint").shape == (6, 2)


def test_tile_rows_repeats_per_latent_rows_chunk_by_chunk():
    t = torch.arange(3.0)[:, None]
    assert tile_rows(t, 3, 2, "hint").flatten().tolist() == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0]


def test_tile_rows_names_the_tensor_and_both_batch_sizes_when_they_differ():
    with pytest.raises(ValueError, match="the mask batch is 2 but the latent batch is 3"):
        tile_rows(_t(1, (2, 1)), 3, 2, "mask")


def test_scatter_puts_computed_rows_in_place_and_zeros_elsewhere():
    res = scatter_residuals(ControlResiduals(output=(_t(5, (1, 2)),)), torch.tensor([2]), 3)
    assert res.output[0].tolist() == [[0.0, 0.0], [0.0, 0.0], [5.0, 5.0]]


def test_layouts_that_differ_cannot_be_summed():
    with pytest.raises(ValueError, match="layouts differ"):
        check_same_layout([unet_like(), adapter_like()])
