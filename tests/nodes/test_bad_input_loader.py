"""Bad input to CNR_ControlNetLoader: damaged, unsafe and foreign weight files (see tests/bad_input.py)."""
import pickle
import struct

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host
from bad_input import (A_WEIGHT, INF, LOADER, NAN, _CreatesFile, _cut, _entry, _nan_data, _safetensors, _torch_save,
                       _with, _with_tensor, case_ids, check_case, file_case, loads_fine, refused)

pytestmark = pytest.mark.comfy


FILE_CASES = [
    file_case("empty safetensors", "empty.safetensors", lambda e: b"", "empty"),
    file_case("empty pth", "empty.pth", lambda e: b"", "empty"),
    file_case("web page saved as safetensors", "page.safetensors",
              lambda e: b"<!DOCTYPE html><html><body>Sign in to download</body></html>", "web page"),
    file_case("web page saved as pth", "page.pth", lambda e: b"<html><head></head><body>404</body></html>",
              "web page"),
    file_case("git lfs pointer", "lfs.safetensors",
              lambda e: b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1445157120\n", "Git LFS"),
    file_case("text file renamed", "notes.ckpt", lambda e: b"these are my notes about the model\n" * 4, "text file"),
    file_case("random bytes", "noise.bin", lambda e: bytes(range(7, 256)) * 20, "neither a safetensors"),
    file_case("header is a json list", "list.safetensors", lambda e: _safetensors([1, 2, 3]), "not an object"),
    file_case("header is not json", "garbled.safetensors",
              lambda e: struct.pack("<Q", 16) + b"{not json at all" + bytes(8), "corrupt safetensors header"),
    file_case("entry without dtype", "nodtype.safetensors",
              lambda e: _safetensors({"a": {"shape": [2], "data_offsets": [0, 8]}}, bytes(8)), "'dtype'"),
    file_case("entry without shape", "noshape.safetensors",
              lambda e: _safetensors({"a": {"dtype": "F32", "data_offsets": [0, 8]}}, bytes(8)), "'shape'"),
    file_case("entry without offsets", "nooffsets.safetensors",
              lambda e: _safetensors({"a": {"dtype": "F32", "shape": [2]}}, bytes(8)), "'data_offsets'"),
    file_case("entry that is a string", "entry.safetensors", lambda e: _safetensors({"a": "F32"}, bytes(8)),
              "not a tensor description"),
    file_case("offsets outside the file", "outside.safetensors",
              lambda e: _safetensors(_entry(data_offsets=[0, 4096]), bytes(8)), "truncated"),
    file_case("offsets reversed", "reversed.safetensors",
              lambda e: _safetensors(_entry(data_offsets=[8, 0]), bytes(8)), "data offsets"),
    file_case("negative offset", "negative.safetensors",
              lambda e: _safetensors(_entry(data_offsets=[-8, 0]), bytes(8)), "data offsets"),
    file_case("negative shape", "negshape.safetensors",
              lambda e: _safetensors(_entry(shape=[-2]), bytes(8)), "shape"),
    file_case("size disagrees with shape", "size.safetensors",
              lambda e: _safetensors(_entry(shape=[3]), bytes(8)), "do not hold"),
    file_case("unknown dtype", "fp8.safetensors", lambda e: _safetensors(_entry(dtype="F8_E4M3"), bytes(8)),
              "F8_E4M3"),
    file_case("download cut in half", "half.safetensors",
              lambda e: (lambda d: _cut(d, len(d) // 2))(safetensors_bytes(e.weights)), "truncated"),
    file_case("download cut inside the header", "header-cut.safetensors",
              lambda e: _cut(safetensors_bytes(e.weights), 400), "truncated"),
    file_case("checkpoint cut short", "half.pth", lambda e: (lambda d: _cut(d, len(d) // 2))(_torch_save(e.weights)),
              "truncated or corrupt"),
    file_case("pickle that runs code (zip)", "evil.pth", lambda e: _torch_save({"state_dict": _CreatesFile(e.canary)}),
              "refused", "open while loading"),
    file_case("pickle that runs code (plain)", "evil.ckpt", lambda e: pickle.dumps(_CreatesFile(e.canary), 2),
              "refused"),
    file_case("pickle of a list", "list.pth", lambda e: _torch_save([torch.zeros(2)]), "not a state dict"),
    file_case("pickle with a non-tensor value", "mixed.pth", lambda e: _torch_save({"epoch": 3}), "'epoch'"),
    file_case("tensor of the wrong shape", "shape.safetensors",
              lambda e: safetensors_bytes(_with_tensor(e, A_WEIGHT, torch.zeros(5, 5, 3, 3))), "wrong shape",
              A_WEIGHT),
    file_case("missing tensor", "missing.safetensors",
              lambda e: safetensors_bytes({k: v for k, v in e.weights.items() if k != A_WEIGHT}), "1 missing"),
    file_case("full checkpoint, refused before its data is read", "checkpoint.safetensors",
              lambda e: _nan_data(["model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.w",
                                   "cond_stage_model.transformer.w"]), "full checkpoint"),
    file_case("LoRA, refused before its data is read", "lora.safetensors",
              lambda e: _nan_data(["lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight",
                                   "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight"]), "Load LoRA"),
    file_case("VAE, refused before its data is read", "vae.safetensors",
              lambda e: _nan_data(["encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight"]),
              "Load VAE"),
    file_case("NaN weight", "nan.safetensors",
              lambda e: safetensors_bytes(_with_tensor(e, A_WEIGHT, _with(e.weights[A_WEIGHT], (0, 0, 0, 0), NAN))),
              "NaN", A_WEIGHT),
    file_case("infinite weight", "inf.pth",
              lambda e: _torch_save(_with_tensor(e, A_WEIGHT, _with(e.weights[A_WEIGHT], (1, 2, 0, 0), -INF))),
              "infinite", A_WEIGHT),
    refused("file not in the folder", LOADER, lambda e: {"control_net_name": "never-downloaded.safetensors"},
            "control_net_name", "never-downloaded.safetensors", "not in the controlnet model folder"),
    loads_fine("zip checkpoint named .safetensors", "zip.safetensors", lambda e: _torch_save(e.weights)),
    loads_fine("safetensors named .pth", "renamed.pth", lambda e: safetensors_bytes(e.weights)),
    loads_fine("legacy (non-zip) checkpoint", "legacy.pt", lambda e: _torch_save(e.weights, zipped=False)),
]


@pytest.mark.parametrize("case", FILE_CASES, ids=case_ids(FILE_CASES))
def test_bad_files_are_refused_naming_the_file_or_load_as_they_are(bad_input_env, case):
    check_case(bad_input_env, case)


def test_a_pickle_that_would_create_a_file_is_refused_and_the_file_never_appears(bad_input_env, tmp_path):
    env = bad_input_env
    proof = tmp_path / "the-payload-works"
    pickle.loads(pickle.dumps(_CreatesFile(proof)))  # the payload is live: loading it unsafely creates the file
    assert proof.exists()
    target = tmp_path / "must-never-exist"
    for name, data in (("evil-zip.pth", _torch_save({"state_dict": _CreatesFile(target)})),
                       ("evil-legacy.ckpt", _torch_save({"w": _CreatesFile(target)}, zipped=False)),
                       ("evil-plain.bin", pickle.dumps(_CreatesFile(target))),
                       ("evil-renamed.safetensors", _torch_save(_CreatesFile(target)))):
        env.write(name, data)
        with pytest.raises(ValueError, match=f"{LOADER}: control_net_name: '{name}' cannot be loaded: .*refused"):
            comfy_host.run_node(LOADER, control_net_name=name)
        assert not target.exists()
    assert not env.canary.exists()
