"""Bad inputs give errors that say what is wrong."""
import pickle

import pytest
import torch
from safetensors.torch import save_file

from cnr_pack.controlnet_core import (ControlNetFormatError, ControlNetInputError, WeightFileError, read_state_dict,
                                      diffusers_to_original, load_controlnet)
from tiny_models import sample_inputs, tiny_sd15_diffusers


@pytest.fixture(scope="module")
def original_sd():
    return diffusers_to_original(tiny_sd15_diffusers().state_dict())


def test_unknown_keys_are_named(original_sd):
    sd = dict(original_sd, **{"something_else.weight": torch.zeros(3)})
    with pytest.raises(ControlNetFormatError, match="unknown.*something_else"):
        load_controlnet(sd)


def test_weights_without_hint_embedding_are_not_a_controlnet():
    with pytest.raises(ControlNetFormatError, match="not a ControlNet"):
        load_controlnet({"foo.weight": torch.zeros(2, 2)})


def test_truncated_safetensors_file_is_reported(original_sd, tmp_path):
    path = tmp_path / "cn.safetensors"
    save_file(original_sd, str(path))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError, match="truncated"):
        load_controlnet(path)


def test_corrupt_safetensors_header_is_reported(tmp_path):
    path = tmp_path / "cn.safetensors"
    path.write_bytes((20).to_bytes(8, "little") + b"{not json at all!!!}" + b"\0" * 64)
    with pytest.raises(WeightFileError, match="corrupt"):
        load_controlnet(path)


def test_truncated_pickle_is_reported(original_sd, tmp_path):
    path = tmp_path / "cn.pth"
    torch.save(original_sd, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(WeightFileError, match="truncated or corrupt"):
        load_controlnet(path)


class _Payload:
    def __reduce__(self):
        return (print, ("this would run on load",))


def test_pickle_that_weights_only_refuses_is_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Payload()}, f)
    with pytest.raises(WeightFileError, match="refused"):
        load_controlnet(path)


def test_unet_checkpoint_given_as_controlnet_is_named_as_such(original_sd):
    sd = {"model.diffusion_model." + k: v for k, v in original_sd.items()}
    sd["model.diffusion_model.output_blocks.0.0.in_layers.0.weight"] = torch.zeros(4)
    with pytest.raises(ControlNetFormatError, match=r"full checkpoint.*model\.diffusion_model.*Load Checkpoint"):
        load_controlnet(sd)


def test_missing_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_controlnet(tmp_path / "nope.safetensors")


def test_hint_not_eight_times_the_latent_is_rejected(original_sd):
    net = load_controlnet(original_sd)
    x, t, context, hint = sample_inputs()
    with pytest.raises(ControlNetInputError, match="8x the latent size"):
        net(x, t, context, hint[..., :56, :])


def test_wrong_context_width_names_the_expected_width(original_sd):
    net = load_controlnet(original_sd)
    x, t, context, hint = sample_inputs()
    with pytest.raises(ControlNetInputError, match="context width 48.*expects 32"):
        net(x, t, torch.zeros(2, 7, 48), hint)


def test_hint_batch_that_neither_matches_nor_broadcasts_is_rejected(original_sd):
    net = load_controlnet(original_sd)
    x, t, context, hint = sample_inputs()
    with pytest.raises(ControlNetInputError, match="hint batch 3"):
        net(x, t, context, torch.cat([hint, hint[:1]]))


def test_weights_too_large_for_the_compute_dtype_are_named(tmp_path):
    path = tmp_path / "big.safetensors"
    save_file({"w": torch.tensor([1.0, 1e6])}, str(path))
    with pytest.raises(WeightFileError, match="'w' has values too large for torch.float16"):
        read_state_dict(str(path), torch.float16)


def test_a_nan_beyond_the_first_chunk_of_a_large_tensor_is_found(tmp_path):
    path = tmp_path / "late-nan.safetensors"
    w = torch.zeros(5_000_000, dtype=torch.float16)
    w[-1] = float("nan")
    save_file({"w": w}, str(path))
    with pytest.raises(WeightFileError, match="'w' holds 1 NaN or infinite values"):
        read_state_dict(str(path), torch.float32)


def test_safetensors_whose_header_length_starts_with_the_pickle_byte_is_read_as_safetensors(tmp_path):
    # The header's 8-byte little-endian length can begin with 0x80, the byte legacy pickles begin with.
    tensors = {}
    path = tmp_path / "weights.safetensors"
    for n in range(1, 400):
        tensors[f"w{n}"] = torch.full((1,), float(n))
        save_file(tensors, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    loaded = read_state_dict(str(path))
    assert set(loaded) == set(tensors) and all(torch.equal(loaded[k], v) for k, v in tensors.items())
