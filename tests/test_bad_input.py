"""Bad input, table-driven, through every node inside a real ComfyUI.

Each case is something users actually feed the nodes: a cut-short download, a web page saved as a
model, a full checkpoint picked as a ControlNet, an RGBA or grey image, one NaN pixel, a mask
painted to the border, a radius larger than the image, a scheduler returning more sigmas than
steps, batches that do not match. Every case ends in one of two classes:

* ``Refused``: an exception whose message starts with the node id (once) and names the input,
  plus whatever else the case needs it to say (sizes, the file, the fix);
* ``Safe``: a result that is finite and has the right shape, and is bit-exact where the README
  promises it (grey = the grey repeated to RGB, RGBA = its RGB, untouched crop = the original).

Every case finishes within a generous time bound and leaves its inputs as they were.
"""
from __future__ import annotations

import dataclasses
import io
import json
import pickle
import struct
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import pytest
import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host

pytestmark = pytest.mark.comfy

TIME_LIMIT_S = 10.0
LOADER, APPLY, STRENGTH = "CNR_ControlNetLoader", "CNR_ApplyControlResiduals", "CNR_Img2ImgStrength"
PREP, CROP, PASTE, APPLY_CROP = "CNR_InpaintMaskPrep", "CNR_PaddedCrop", "CNR_PaddedPaste", "CNR_ApplyCrop"
NAN, INF = float("nan"), float("inf")


def _rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


HINT = _rand(1, 64, 64, 3, seed=1)  # 8x the tiny UNet's 8x8 latent
GREY = _rand(1, 64, 64, 1, seed=2)
IMAGE = _rand(1, 64, 96, 3, seed=3)
MASK = torch.zeros(64, 96)
MASK[20:40, 30:60] = 1.0


def _with(t: torch.Tensor, index, value) -> torch.Tensor:
    out = t.clone()
    out[index] = value
    return out


class Env:
    """What the cases share: a real ComfyUI, tiny seeded models and a controlnet folder to write files in."""

    def __init__(self, folder: Path):
        self.nodes = comfy_host.boot()
        import folder_paths
        self.folder = folder
        folder_paths.add_model_folder_path("controlnet", str(folder))
        self.weights = comfy_host.tiny_controlnet_state_dict()
        self.model = comfy_host.tiny_unet()
        self.vae = comfy_host.tiny_vae()
        self.canary = folder / "created-by-the-pickle"
        self.write("tiny.safetensors", safetensors_bytes(self.weights))
        self.controlnet = comfy_host.run_node(LOADER, control_net_name="tiny.safetensors")[0]
        self.pos, self.neg = comfy_host.conditioning(10), comfy_host.conditioning(11)
        self._crops = {}

    def write(self, name: str, data: bytes) -> str:
        (self.folder / name).write_bytes(data)
        return name

    def crop(self, mask=MASK, image=IMAGE, **options) -> object:
        """A CNR_CROP from CNR_PaddedCrop on ``image``, cached per mask and options."""
        key = (mask.data_ptr(), tuple(mask.shape), image.data_ptr(), tuple(image.shape), tuple(sorted(options.items())))
        if key not in self._crops:
            settings = {"padding": 8, "width": 64, "height": 64, "feather": 4, **options}
            self._crops[key] = comfy_host.run_node(CROP, image=image, mask=mask, **settings)[2]
        return self._crops[key]

    def sample(self, model, batch: int = 1) -> torch.Tensor:
        pos, neg = comfy_host.conditioning(10, batch), comfy_host.conditioning(11, batch)
        return comfy_host.sample(model, pos, neg, steps=1, batch=batch)

    def nan_schedule_model(self):
        """The tiny UNet with a noise schedule whose largest sigma is NaN (as a broken model patch leaves it)."""
        model = comfy_host.tiny_unet()
        sampling = model.model.model_sampling
        sampling.set_sigmas(_with(sampling.sigmas.clone(), -1, NAN))
        return model


@dataclass(frozen=True)
class Refused:
    """A clear error: starts with the node id once, names ``input``, and holds every fragment."""

    input: str
    fragments: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Safe:
    """A finite result; ``check(env, outputs, inputs)`` asserts the rest (shape, exactness)."""

    check: Optional[Callable] = None


@dataclass(frozen=True)
class Case:
    id: str
    node: str
    inputs: Callable[[Env], dict]
    expect: Union[Refused, Safe]
    then: Optional[Callable[[Env, tuple], tuple]] = None  # the next graph step (e.g. sampling), timed too


def refused(id, node, inputs, input_name, *fragments, then=None) -> Case:
    return Case(id, node, inputs, Refused(input_name, fragments), then)


def safe(id, node, inputs, check=None, then=None) -> Case:
    return Case(id, node, inputs, Safe(check), then)


# ---- weight files -----------------------------------------------------------------------------

def _safetensors(header, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _entry(**fields):
    return {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8], **fields}}


def _torch_save(obj, zipped: bool = True) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=zipped)
    return buffer.getvalue()


class _CreatesFile:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _nan_data(keys, shape=(4, 4)):
    """Tensors under ``keys`` whose data is NaN: were the data read before the keys, the NaN would be named."""
    return safetensors_bytes({k: torch.full(shape, NAN) for k in keys})


def _with_tensor(e: Env, key: str, tensor) -> dict:
    return {**e.weights, key: tensor}


A_WEIGHT = "input_blocks.1.0.in_layers.2.weight"


def file_case(id, name, content, *fragments) -> Case:
    """CNR_ControlNetLoader on a file ``name`` holding ``content(env)``; refused, naming the file."""
    return refused(id, LOADER, lambda e: {"control_net_name": e.write(name, content(e))}, "control_net_name",
                   f"'{name}'", *fragments)


def loads_fine(id, name, content) -> Case:
    def check(e, out, inputs):
        net = out[0].net
        assert all(torch.equal(net.state_dict()[k], v) for k, v in e.weights.items())
    return safe(id, LOADER, lambda e: {"control_net_name": e.write(name, content(e))}, check)


def _cut(data: bytes, keep: int) -> bytes:
    return data[:keep]


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


# ---- CNR_ApplyControlResiduals -----------------------------------------------------------------

def apply_inputs(**overrides):
    return lambda e: {"model": e.model, "controlnet": e.controlnet, "image": HINT, **overrides}


def sampled(batch: int = 1):
    """Sample with the node's MODEL: errors known only once the latent exists surface here."""
    return lambda e, out: (e.sample(out[0], batch),)


def same_as_sampling_with(**overrides):
    """Bit-exact: the sampled latent equals sampling with the node given ``overrides`` instead."""
    def check(e, out, inputs):
        (patched,) = comfy_host.run_node(APPLY, **{**inputs, **overrides})
        assert out[0].shape == (1, 4, 8, 8)
        assert torch.equal(out[0], e.sample(patched))
    return check


def returns_model_unchanged(e, out, inputs):
    assert out[0] is inputs["model"]


def finite_latent(batch: int = 1):
    def check(e, out, inputs):
        assert out[0].shape == (batch, 4, 8, 8)
    return check


APPLY_CASES = [
    refused("strength NaN", APPLY, apply_inputs(strength=NAN), "strength", "finite"),
    refused("strength +inf", APPLY, apply_inputs(strength=INF), "strength", "finite"),
    refused("strength -inf", APPLY, apply_inputs(strength=-INF), "strength"),
    refused("strength beyond its range over a link", APPLY, apply_inputs(strength=25.0), "strength", "0.0..10.0"),
    refused("start_percent NaN", APPLY, apply_inputs(start_percent=NAN), "start_percent"),
    refused("end_percent NaN", APPLY, apply_inputs(end_percent=NAN), "end_percent"),
    refused("start after end", APPLY, apply_inputs(start_percent=0.8, end_percent=0.2), "start_percent"),
    refused("soft_base NaN", APPLY, apply_inputs(soft_base=NAN), "soft_base"),
    refused("uncond_multiplier inf", APPLY, apply_inputs(uncond_multiplier=INF), "uncond_multiplier"),
    refused("control_mode unknown", APPLY, apply_inputs(control_mode="strong"), "control_mode", "balanced"),
    refused("block_weights holds nan", APPLY, apply_inputs(block_weights="1,1,1,1,1,1,1,1,1,1,1,1,nan"),
            "block_weights", "finite"),
    refused("block_weights holds inf", APPLY, apply_inputs(block_weights="inf," + "1," * 11 + "1"), "block_weights"),
    refused("block_weights not numbers", APPLY, apply_inputs(block_weights="1, 2, three"), "block_weights"),
    refused("block_weights too few", APPLY, apply_inputs(block_weights="1, 2"), "block_weights", "13"),
    refused("image with one NaN pixel", APPLY, apply_inputs(image=_with(HINT, (0, 5, 5, 1), NAN)), "image", "NaN"),
    refused("image with two channels", APPLY, apply_inputs(image=HINT[..., :2]), "image", "2 channels"),
    refused("image without a batch dimension", APPLY, apply_inputs(image=HINT[0]), "image", "[B,H,W,C]"),
    refused("mask with inf", APPLY, apply_inputs(mask=_with(torch.ones(64, 64), (3, 3), INF)), "mask"),
    refused("inpaint_mask with NaN", APPLY, apply_inputs(inpaint_mask=torch.full((1, 64, 64), NAN)), "inpaint_mask"),
    refused("mask batch 2 for image batch 3", APPLY, apply_inputs(image=HINT.repeat(3, 1, 1, 1),
                                                                  mask=torch.ones(2, 64, 64)), "mask", "3", "2"),
    refused("inpaint_mask batch 2 for image batch 3", APPLY,
            apply_inputs(image=HINT.repeat(3, 1, 1, 1), inpaint_mask=torch.ones(2, 64, 64)), "inpaint_mask", "3", "2"),
    refused("image batch 3 for latent batch 2", APPLY, apply_inputs(image=HINT.repeat(3, 1, 1, 1)), "image",
            "batch of 3", "has 2", then=sampled(batch=2)),
    refused("mask batch 3 for latent batch 2", APPLY, apply_inputs(mask=torch.ones(3, 64, 64)), "mask",
            "batch of 3", "has 2", then=sampled(batch=2)),
    safe("grey image is the grey repeated to RGB", APPLY, apply_inputs(image=GREY),
         same_as_sampling_with(image=GREY.repeat(1, 1, 1, 3)), then=sampled()),
    safe("RGBA image is its RGB", APPLY, apply_inputs(image=torch.cat([HINT, GREY], -1)),
         same_as_sampling_with(image=HINT), then=sampled()),
    safe("1x1 image", APPLY, apply_inputs(image=HINT[:, :1, :1]), finite_latent(), then=sampled()),
    safe("8x4096 image", APPLY, apply_inputs(image=_rand(1, 8, 4096, 3)), finite_latent(), then=sampled()),
    safe("13x17 image, not a multiple of 8", APPLY, apply_inputs(image=_rand(1, 13, 17, 3), resize_mode="fill"),
         finite_latent(), then=sampled()),
    safe("mask painted to the border equals no mask", APPLY, apply_inputs(mask=torch.ones(64, 64)),
         same_as_sampling_with(mask=None), then=sampled()),
    safe("strength 0 returns the model as it came", APPLY, apply_inputs(strength=0.0), returns_model_unchanged),
    safe("all-zero mask returns the model as it came", APPLY, apply_inputs(mask=torch.zeros(64, 64)),
         returns_model_unchanged),
    safe("one image for a latent batch of 2", APPLY, apply_inputs(), finite_latent(2), then=sampled(batch=2)),
]


# ---- CNR_Img2ImgStrength -----------------------------------------------------------------------

def strength_inputs(**overrides):
    return lambda e: {"model": e.model, **overrides}


def runs_nothing(e, out, inputs):
    sigmas, executed, start = out
    assert executed == 0 and len(sigmas) == 1 and start == float(sigmas[0]) == 0.0


def runs_whole_schedule(steps):
    def check(e, out, inputs):
        import comfy.samplers
        full = comfy.samplers.calculate_sigmas_scheduler(e.model.model, inputs["scheduler"], steps) \
            if not hasattr(comfy.samplers, "calculate_sigmas") else \
            comfy.samplers.calculate_sigmas(e.model.get_model_object("model_sampling"), inputs["scheduler"], steps)
        sigmas, executed, _ = out
        assert torch.equal(sigmas, full.cpu()) and executed == len(full) - 1
    return check


def executed_matches_sigmas(e, out, inputs):
    sigmas, executed, start = out
    assert executed == len(sigmas) - 1 and start == float(sigmas[0])


STRENGTH_CASES = [
    refused("strength NaN", STRENGTH, strength_inputs(strength=NAN), "strength", "finite"),
    refused("strength 1.5 over a link", STRENGTH, strength_inputs(strength=1.5), "strength", "0.0..1.0"),
    refused("steps 0 over a link", STRENGTH, strength_inputs(steps=0), "steps"),
    refused("scheduler unknown", STRENGTH, strength_inputs(scheduler="warp"), "scheduler", "normal"),
    refused("rule unknown", STRENGTH, strength_inputs(rule="half"), "rule"),
    refused("comfyui denoise rule at an absurd strength", STRENGTH,
            strength_inputs(steps=10000, strength=0.01, rule="comfyui (denoise)"), "strength", "10000", "diffusers"),
    refused("a noise schedule holding NaN", STRENGTH, lambda e: {"model": e.nan_schedule_model()}, "scheduler",
            "'normal'"),
    safe("ddim_uniform returning more sigmas than steps, strength 1", STRENGTH,
         strength_inputs(scheduler="ddim_uniform", steps=7, strength=1.0), runs_whole_schedule(7)),
    safe("ddim_uniform with more steps than the model has", STRENGTH,
         strength_inputs(scheduler="ddim_uniform", steps=5000, strength=0.5), executed_matches_sigmas),
    safe("ddim_uniform at strength 0", STRENGTH, strength_inputs(scheduler="ddim_uniform", steps=7, strength=0.0),
         runs_nothing),
    safe("karras at 1 step, strength 0", STRENGTH, strength_inputs(scheduler="karras", steps=1, strength=0.0),
         runs_nothing),
    safe("comfyui denoise rule at strength 0", STRENGTH, strength_inputs(strength=0.0, rule="comfyui (denoise)"),
         runs_nothing),
    safe("comfyui denoise rule at its largest schedule", STRENGTH,
         strength_inputs(steps=5, strength=0.0005, rule="comfyui (denoise)"), executed_matches_sigmas),
]


# ---- CNR_InpaintMaskPrep -----------------------------------------------------------------------

PREP_IMAGE = IMAGE[:, :64, :64]
PREP_MASK = MASK[:64, :64]


def prep_inputs(**overrides):
    return lambda e: {"image": PREP_IMAGE, "mask": PREP_MASK, "vae": e.vae, **overrides}


def prep_shapes(h=64, w=64, check=None):
    def verify(e, out, inputs):
        latent, sample_mask, paste_mask, masked, _, _ = out
        assert latent["samples"].shape == (1, 4, h // 8, w // 8)
        assert latent["noise_mask"].shape == (1, 1, h // 8, w // 8)
        assert sample_mask.shape == paste_mask.shape == (1, h, w) and masked.shape == (1, h, w, 3)
        assert float(paste_mask.max()) <= 1.0 and float(paste_mask.min()) >= 0.0
        if check is not None:
            check(out, inputs)
    return verify


def prep_same_as(**overrides):
    def check(e, out, inputs):
        expected = comfy_host.run_node(PREP, **{**inputs, **overrides})
        assert torch.equal(out[0]["samples"], expected[0]["samples"]) and torch.equal(out[3], expected[3])
    return check


def all_masked(out, inputs):
    assert bool((out[1] == 1).all())


def none_masked(out, inputs):
    assert not bool(out[1].any())


PREP_CASES = [
    refused("threshold NaN", PREP, prep_inputs(threshold=NAN), "threshold", "finite"),
    refused("grow beyond its range over a link", PREP, prep_inputs(grow=5000), "grow", "-256..256"),
    refused("feather negative over a link", PREP, prep_inputs(feather=-4), "feather"),
    refused("fill unknown", PREP, prep_inputs(fill="blue"), "fill", "grey"),
    refused("image with one inf pixel", PREP, prep_inputs(image=_with(PREP_IMAGE, (0, 1, 1, 0), INF)), "image"),
    refused("mask with NaN", PREP, prep_inputs(mask=_with(PREP_MASK, (0, 0), NAN)), "mask", "NaN"),
    refused("image 60x60, not a multiple of 8", PREP, prep_inputs(image=PREP_IMAGE[:, :60, :60],
                                                                  mask=PREP_MASK[:60, :60]), "image", "60x60"),
    refused("mask of another size", PREP, prep_inputs(mask=torch.ones(32, 48)), "mask", "48x32", "64x64"),
    refused("mask batch 3 for image batch 2", PREP, prep_inputs(image=PREP_IMAGE.repeat(2, 1, 1, 1),
                                                                mask=torch.ones(3, 64, 64)), "mask", "3", "2"),
    safe("grey image is the grey repeated to RGB", PREP, prep_inputs(image=GREY),
         prep_same_as(image=GREY.repeat(1, 1, 1, 3))),
    safe("RGBA image is its RGB", PREP, prep_inputs(image=torch.cat([PREP_IMAGE, GREY], -1)),
         prep_same_as(image=PREP_IMAGE)),
    safe("grow beyond the image", PREP, prep_inputs(grow=256), prep_shapes(check=all_masked)),
    safe("erode beyond the image", PREP, prep_inputs(grow=-256), prep_shapes(check=none_masked)),
    safe("feather beyond the image", PREP, prep_inputs(feather=256, feather_sampling=True), prep_shapes()),
    safe("mask painted to the border survives erosion", PREP, prep_inputs(mask=torch.ones(64, 64), grow=-5),
         prep_shapes(check=all_masked)),
    safe("8x8 image, one pixel masked, radii beyond it", PREP,
         prep_inputs(image=PREP_IMAGE[:, :8, :8], mask=_with(torch.zeros(8, 8), (7, 7), 1.0), grow=256, feather=256),
         prep_shapes(8, 8, check=all_masked)),
    safe("8x4096 strip, feather 256", PREP,
         prep_inputs(image=_rand(1, 8, 4096, 3), mask=torch.ones(8, 4096), feather=256), prep_shapes(8, 4096)),
]


# ---- CNR_PaddedCrop ----------------------------------------------------------------------------

def crop_inputs(**overrides):
    return lambda e: {"image": IMAGE, "mask": MASK, "padding": 8, "width": 64, "height": 64, **overrides}


def cropped_to(h, w, check=None, channels=3, crops=1):
    def verify(e, out, inputs):
        image, mask, crop, debug = out
        assert image.shape == (crops, h, w, channels) and mask.shape == (crops, h, w)
        assert debug.shape == (crops, h, w, 3)
        H, W = crop.frame
        for box in crop.boxes:
            assert box.w >= 1 and box.h >= 1 and 0 <= box.x <= W - box.w and 0 <= box.y <= H - box.h
        if check is not None:
            check(e, out, inputs)
    return verify


def crop_same_as(**overrides):
    def check(e, out, inputs):
        expected = comfy_host.run_node(CROP, **{**inputs, **overrides})
        assert torch.equal(out[0], expected[0]) and torch.equal(out[1], expected[1])
    return check


def first_channels_same_as(alpha_is_channel_0=False, **overrides):
    """The crop's colour channels equal the crop of ``overrides``' RGB; alpha (channel 3) is cropped as channel 0."""
    def check(e, out, inputs):
        expected = comfy_host.run_node(CROP, **{**inputs, **overrides})[0]
        channels = out[0].shape[-1]
        assert torch.equal(out[0][..., :min(channels, 3)], expected[..., :min(channels, 3)])
        if alpha_is_channel_0:
            assert torch.equal(out[0][..., 3], out[0][..., 0])
    return check


def box_holds_mask(e, out, inputs):
    box = out[2].boxes[0]
    mask = inputs["mask"]
    assert float(mask[box.y:box.y + box.h, box.x:box.x + box.w].sum()) == float(mask.sum())


CORNER = _with(torch.zeros(64, 96), (63, 95), 1.0)
GRID_MASK = torch.zeros(64, 96)
GRID_MASK[::3, ::3] = 1.0  # 22 x 32 separate pixels
THREE_ISLANDS = torch.zeros(64, 96)
THREE_ISLANDS[2:8, 2:8] = THREE_ISLANDS[50:60, 40:46] = THREE_ISLANDS[5:9, 84:94] = 1.0


def all_empty(e, out, inputs):
    assert all(out[2].empty)


def canvas_is(h, w):
    def check(e, out, inputs):
        assert out[2].canvas_size == (h, w)
    return check


def paste_box_holds_mask(e, out, inputs):
    mask = inputs["mask"]
    for k in range(len(out[2].boxes)):
        box = out[2].paste_box(k)
        assert float(mask[box.y:box.y + box.h, box.x:box.x + box.w].sum()) == float(mask.sum())
PER_IMAGE = (MASK.expand(2, 64, 96), IMAGE.repeat(2, 1, 1, 1))  # one mask (and box) per image

CROP_CASES = [
    refused("image with one NaN pixel", CROP, crop_inputs(image=_with(IMAGE, (0, 0, 0, 2), NAN)), "image"),
    refused("mask with NaN", CROP, crop_inputs(mask=_with(MASK, (1, 1), NAN)), "mask"),
    refused("context_mask with inf", CROP, crop_inputs(context_mask=torch.full((64, 96), INF)), "context_mask"),
    refused("image with five channels", CROP, crop_inputs(image=_rand(1, 64, 96, 5)), "image", "5 channels"),
    refused("mask of another size", CROP, crop_inputs(mask=torch.ones(32, 48)), "mask", "48x32", "96x64"),
    refused("mask batch 3 for image batch 2", CROP, crop_inputs(image=IMAGE.repeat(2, 1, 1, 1),
                                                                mask=torch.ones(3, 64, 96)), "mask", "3", "2"),
    refused("context_mask batch 2 for image batch 3", CROP,
            crop_inputs(image=IMAGE.repeat(3, 1, 1, 1), context_mask=torch.ones(2, 64, 96)), "context_mask"),
    refused("width 0 over a link", CROP, crop_inputs(width=0), "width", "8"),
    refused("padding negative over a link", CROP, crop_inputs(padding=-5), "padding"),
    refused("filter unknown", CROP, crop_inputs(filter="sinc"), "filter"),
    safe("grey image stays grey", CROP, crop_inputs(image=GREY, mask=PREP_MASK),
         cropped_to(64, 64, first_channels_same_as(image=GREY.repeat(1, 1, 1, 3)), channels=1)),
    safe("RGBA image keeps its alpha", CROP, crop_inputs(image=torch.cat([IMAGE, IMAGE[..., :1]], -1)),
         cropped_to(64, 64, first_channels_same_as(image=IMAGE, alpha_is_channel_0=True), channels=4)),
    safe("1x1 image", CROP, crop_inputs(image=IMAGE[:, :1, :1], mask=torch.ones(1, 1)), cropped_to(64, 64)),
    safe("1x1 image, native size", CROP,
         crop_inputs(image=IMAGE[:, :1, :1], mask=torch.ones(1, 1), size_mode="native (no resize)"), cropped_to(1, 1)),
    safe("1x1 image, long side", CROP,
         crop_inputs(image=IMAGE[:, :1, :1], mask=torch.ones(1, 1), size_mode="long side", long_side=64),
         cropped_to(64, 64)),
    safe("8x4096 strip fully masked", CROP, crop_inputs(image=_rand(1, 8, 4096, 3), mask=torch.ones(8, 4096)),
         cropped_to(64, 64, box_holds_mask)),
    safe("4096x8 strip, long side", CROP,
         crop_inputs(image=_rand(1, 4096, 8, 3), mask=torch.ones(4096, 8), size_mode="long side", long_side=512),
         cropped_to(512, 8, box_holds_mask)),
    safe("mask on the bottom-right pixel", CROP, crop_inputs(mask=CORNER, padding=0),
         cropped_to(64, 64, box_holds_mask)),
    safe("mask painted to the border, feather beyond the image", CROP,
         crop_inputs(mask=torch.ones(64, 96), feather=512), cropped_to(64, 64, box_holds_mask)),
    safe("13x17 image, native size", CROP,
         crop_inputs(image=_rand(1, 13, 17, 3), mask=torch.ones(13, 17), size_mode="native (no resize)"),
         cropped_to(13, 17)),
    refused("704 islands, beyond the cap of 64", CROP,
            crop_inputs(mask=GRID_MASK, regions="islands", padding=0, width=8, height=8), "mask", "704", "64",
            "mask_expand"),
    refused("regions on an image batch of 2", CROP, crop_inputs(image=IMAGE.repeat(2, 1, 1, 1), regions="islands"),
            "image", "2"),
    refused("islands of a mask batch of 2", CROP, crop_inputs(mask=MASK.expand(2, 64, 96), regions="islands"),
            "mask", "mask batch"),
    refused("regions at native size", CROP, crop_inputs(regions="islands", size_mode="native (no resize)"),
            "size_mode", "width x height"),
    refused("context_mask batch 2 for a mask batch of 3", CROP,
            crop_inputs(mask=MASK.expand(3, 64, 96), context_mask=torch.ones(2, 64, 96), regions="mask batch"),
            "context_mask", "2", "3"),
    refused("regions unknown", CROP, crop_inputs(regions="all of them"), "regions"),
    refused("extend_up 150 sides", CROP, crop_inputs(extend_up=150.0), "extend_up", "0..99"),
    refused("extend_left negative over a link", CROP, crop_inputs(extend_left=-0.5), "extend_left"),
    refused("extension beyond 16384 px", CROP, crop_inputs(extend_unit="pixels", extend_right=16384.0),
            "extend_", "16384"),
    refused("pre-resize minimum and maximum that cannot both hold", CROP,
            crop_inputs(preresize="ensure minimum and maximum", preresize_max_width=16, preresize_max_height=16),
            "preresize", "aspect"),
    refused("mask_hipass 2 over a link", CROP, crop_inputs(mask_hipass=2.0), "mask_hipass"),
    refused("context_factor 0.5 over a link", CROP, crop_inputs(context_factor=0.5), "context_factor"),
    safe("no island: one empty crop of the whole image", CROP,
         crop_inputs(mask=torch.zeros(64, 96), regions="islands"), cropped_to(64, 64, all_empty)),
    safe("three islands: three crops in one batch", CROP, crop_inputs(mask=THREE_ISLANDS, regions="islands"),
         cropped_to(64, 64, crops=3)),
    safe("island smaller than a pixel after pre-resize", CROP,
         crop_inputs(mask=CORNER, regions="islands", padding=0, preresize="ensure maximum", preresize_max_width=12,
                     preresize_max_height=12), cropped_to(64, 64, paste_box_holds_mask)),
    safe("outpaint all four sides with the mask on the image edge", CROP,
         crop_inputs(mask=CORNER, extend_unit="pixels", extend_up=8.0, extend_down=8.0, extend_left=8.0,
                     extend_right=8.0), cropped_to(64, 64, canvas_is(80, 112))),
    safe("outpaint one side by 99 sides", CROP, crop_inputs(image=IMAGE[:, :8, :8], mask=torch.zeros(8, 8),
                                                           extend_right=99.0), cropped_to(64, 64, canvas_is(8, 800))),
    safe("every CAS option at once", CROP,
         crop_inputs(mask_fill_holes=True, mask_expand=4, mask_hipass=0.1, context_factor=1.2,
                     downscale_filter="area", preresize="ensure minimum", preresize_min_width=128,
                     preresize_min_height=128, extend_up=0.25), cropped_to(64, 64, canvas_is(80, 96))),
]


# ---- CNR_PaddedPaste ---------------------------------------------------------------------------

GENERATED = _rand(1, 64, 64, 3, seed=4)
RGBA = torch.cat([IMAGE, _rand(1, 64, 96, 1, seed=5)], -1)


def paste_inputs(**overrides):
    return lambda e: {"original": IMAGE, "generated": GENERATED, "crop": e.crop(), **overrides}


def pasted(check=None):
    """The README's promise: every pixel the crop's weights leave at 0 is the original, bit for bit."""
    def verify(e, out, inputs):
        (image,) = out
        assert image.shape == (1, 64, 96, 3)
        crop, box = inputs["crop"], inputs["crop"].boxes[0]
        weights = torch.zeros(64, 96)
        weights[box.y:box.y + box.h, box.x:box.x + box.w] = crop.paste_weights[0][0, 0]
        assert torch.equal(image[0][weights == 0], IMAGE[0][weights == 0])
        if check is not None:
            check(e, out, inputs)
    return verify


def paste_same_as(**overrides):
    def check(e, out, inputs):
        assert torch.equal(out[0], comfy_host.run_node(PASTE, **{**inputs, **overrides})[0])
    return check


def untouched_is_exact(e, out, inputs):
    assert torch.equal(out[0], IMAGE)


def rgba_kept(e, out, inputs):
    (image,) = out
    assert image.shape == (1, 64, 96, 4) and torch.equal(image[..., 3], RGBA[..., 3])
    rgb = comfy_host.run_node(PASTE, **{**inputs, "original": IMAGE})[0]
    assert torch.equal(image[..., :3], rgb)


def grey_kept(e, out, inputs):
    (image,) = out
    assert image.shape == (1, 64, 96, 1)
    crop, box = inputs["crop"], inputs["crop"].boxes[0]
    weights = torch.zeros(64, 96)
    weights[box.y:box.y + box.h, box.x:box.x + box.w] = crop.paste_weights[0][0, 0]
    assert torch.equal(image[0][weights == 0], IMAGE[0, ..., :1][weights == 0])


def extended_to(h, w):
    def check(e, out, inputs):
        assert out[0].shape == (1, h, w, 3)
        assert torch.equal(out[0][:, :, :96][0][MASK == 0], IMAGE[0][MASK == 0])
    return check


PASTE_CASES = [
    refused("original of another size than the crop's", PASTE, paste_inputs(original=IMAGE[:, :32, :48]), "original",
            "48x32", "96x64", "CNR_PaddedCrop"),
    refused("generated all NaN", PASTE, paste_inputs(generated=torch.full((1, 64, 64, 3), NAN)), "generated"),
    refused("paste_mask with NaN", PASTE, paste_inputs(paste_mask=_with(torch.ones(64, 64), (0, 0), NAN)),
            "paste_mask"),
    refused("paste_mask batch 2 for 3 generated", PASTE,
            paste_inputs(original=IMAGE, generated=GENERATED.repeat(3, 1, 1, 1), paste_mask=torch.ones(2, 64, 64)),
            "paste_mask", "2", "3"),
    refused("original batch 2 for 3 generated", PASTE,
            paste_inputs(original=IMAGE.repeat(2, 1, 1, 1), generated=GENERATED.repeat(3, 1, 1, 1)), "original"),
    refused("crop of 2 boxes for 3 generated", PASTE,
            lambda e: {"original": IMAGE, "generated": GENERATED.repeat(3, 1, 1, 1), "crop": e.crop(*PER_IMAGE)},
            "crop", "2", "3"),
    safe("grey generated is the grey repeated to RGB", PASTE, paste_inputs(generated=GREY),
         pasted(paste_same_as(generated=GREY.repeat(1, 1, 1, 3)))),
    safe("RGBA generated is its RGB", PASTE, paste_inputs(generated=torch.cat([GENERATED, GREY], -1)),
         pasted(paste_same_as(generated=GENERATED))),
    safe("generated of another size", PASTE, paste_inputs(generated=_rand(1, 17, 9, 3)), pasted()),
    safe("untouched crop returns the original exactly", PASTE,
         lambda e: {"original": IMAGE, "generated": comfy_host.run_node(APPLY_CROP, crop=e.crop(), image=IMAGE)[0],
                    "crop": e.crop()}, untouched_is_exact),
    safe("RGBA original keeps its alpha", PASTE, paste_inputs(original=RGBA), rgba_kept),
    safe("grey original stays grey", PASTE, paste_inputs(original=IMAGE[..., :1]), grey_kept),
    refused("2 generated for a crop of 3 regions", PASTE,
            lambda e: {"original": IMAGE, "generated": GENERATED.repeat(2, 1, 1, 1),
                       "crop": e.crop(mask=THREE_ISLANDS, regions="islands")}, "generated", "3 regions"),
    refused("original batch 2 for a crop of regions", PASTE,
            lambda e: {"original": IMAGE.repeat(2, 1, 1, 1), "generated": GENERATED.repeat(3, 1, 1, 1),
                       "crop": e.crop(mask=THREE_ISLANDS, regions="islands")}, "original", "regions"),
    refused("harmony unknown", PASTE, paste_inputs(harmony="auto"), "harmony"),
    safe("harmony keeps every pixel with weight 0", PASTE, paste_inputs(harmony="mean and spread"), pasted()),
    safe("no island pastes back the original", PASTE,
         lambda e: {"original": IMAGE, "generated": GENERATED,
                    "crop": e.crop(mask=torch.zeros(64, 96), regions="islands")}, untouched_is_exact),
    safe("outpainted crop pastes into the larger image", PASTE,
         lambda e: {"original": IMAGE, "generated": GENERATED,
                    "crop": e.crop(extend_unit="pixels", extend_right=16.0)}, extended_to(64, 112)),
]



# ---- CNR_ApplyCrop -----------------------------------------------------------------------------

def apply_crop_inputs(**overrides):
    return lambda e: {"crop": e.crop(), **overrides}


def cropped_to_constant(value, output=0, channels=(3,), batch=1):
    """The crop of a constant image or mask is that constant: never empty, never black."""
    def check(e, out, inputs):
        crop = out[output]
        assert crop.shape in [(batch, 64, 64, c) for c in channels] + [(batch, 64, 64)]
        assert torch.allclose(crop, torch.full_like(crop, value), atol=1e-5)
    return check


APPLY_CROP_CASES = [
    refused("image with NaN", APPLY_CROP, apply_crop_inputs(image=_with(IMAGE, (0, 30, 40, 0), NAN)), "image"),
    refused("mask with inf", APPLY_CROP, apply_crop_inputs(mask=torch.full((64, 96), -INF)), "mask"),
    refused("image with two channels", APPLY_CROP, apply_crop_inputs(image=IMAGE[..., :2]), "image", "2 channels"),
    refused("image batch 3 for a crop of 2 boxes", APPLY_CROP,
            lambda e: {"crop": e.crop(*PER_IMAGE), "image": IMAGE.repeat(3, 1, 1, 1)}, "crop", "2", "3"),
    safe("bottom-right box on a 6x9 image", APPLY_CROP,
         lambda e: {"crop": e.crop(mask=CORNER, padding=0), "image": torch.full((1, 6, 9, 3), 0.75)},
         cropped_to_constant(0.75)),
    safe("bottom-right box on a 1x1 image", APPLY_CROP,
         lambda e: {"crop": e.crop(mask=CORNER, padding=0), "image": torch.full((1, 1, 1, 3), 0.25)},
         cropped_to_constant(0.25)),
    safe("grey image of another size stays grey", APPLY_CROP,
         apply_crop_inputs(image=torch.full((1, 32, 48, 1), 0.5)), cropped_to_constant(0.5, channels=(1,))),
    safe("RGBA hint keeps its alpha", APPLY_CROP, apply_crop_inputs(image=torch.full((1, 64, 96, 4), 0.5)),
         cropped_to_constant(0.5, channels=(4,))),
    safe("one hint for a crop of 3 regions gives 3 crops", APPLY_CROP,
         lambda e: {"crop": e.crop(mask=THREE_ISLANDS, regions="islands"), "image": torch.full((1, 64, 96, 3), 0.5)},
         cropped_to_constant(0.5, batch=3)),
    refused("hint batch 2 for a crop of 3 regions", APPLY_CROP,
            lambda e: {"crop": e.crop(mask=THREE_ISLANDS, regions="islands"), "image": IMAGE.repeat(2, 1, 1, 1)},
            "image", "3 regions"),
    safe("mask of another size", APPLY_CROP, apply_crop_inputs(mask=torch.ones(16, 24)),
         cropped_to_constant(1.0, output=1)),
]

CASES = FILE_CASES + APPLY_CASES + STRENGTH_CASES + PREP_CASES + CROP_CASES + PASTE_CASES + APPLY_CROP_CASES


# ---- the runner --------------------------------------------------------------------------------

def _fingerprint(value):
    """What must not change: tensor bytes (NaN-safe), containers, dataclasses, and a MODEL's options."""
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        return ("tensor", value.dtype, tuple(value.shape), flat.view(torch.uint8).numpy().tobytes())
    if isinstance(value, dict):
        return {k: _fingerprint(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_fingerprint(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_fingerprint(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "patcher"]
    if hasattr(value, "model_options"):
        options = value.model_options
        return ("model", sorted(options), id(options.get("model_function_wrapper")),
                sorted(options.get("transformer_options", {})))
    return ("object", id(value))


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)


def _run(case: Case, env: Env, inputs: dict):
    """The node, then the graph step after it, each timed: (outputs, error, the slower step's seconds)."""
    out, slowest = None, 0.0
    steps = [lambda _: comfy_host.run_node(case.node, **inputs)] + ([partial(case.then, env)] if case.then else [])
    for step in steps:
        start = time.perf_counter()
        try:
            out = step(out)
        except Exception as e:  # the class of the outcome is asserted by the caller
            return None, e, max(slowest, time.perf_counter() - start)
        slowest = max(slowest, time.perf_counter() - start)
    return out, None, slowest


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return Env(tmp_path_factory.mktemp("controlnet"))


def test_the_table_has_at_least_80_cases_over_every_node():
    assert len(CASES) >= 80 and len({c.id + c.node for c in CASES}) == len(CASES)
    assert {c.node for c in CASES} == {LOADER, APPLY, STRENGTH, PREP, CROP, PASTE, APPLY_CROP}
    assert {type(c.expect) for c in CASES} == {Refused, Safe}


@pytest.mark.parametrize("case", CASES, ids=[f"{c.node}: {c.id}" for c in CASES])
def test_bad_input_is_a_clear_error_or_a_safe_result(env, case):
    inputs = case.inputs(env)
    before = _fingerprint(inputs)
    out, error, seconds = _run(case, env, inputs)
    assert seconds < TIME_LIMIT_S, f"took {seconds:.1f} s"
    assert _fingerprint(inputs) == before, "the node changed its inputs"
    if isinstance(case.expect, Refused):
        assert error is not None, f"expected an error naming {case.expect.input}, got a result"
        message = str(error)
        assert isinstance(error, (ValueError, OSError)), f"{type(error).__name__}: {message}"
        assert message.startswith(f"{case.node}: ") and message.count(case.node) == 1, message
        assert case.expect.input in message, message
        for fragment in case.expect.fragments:
            assert fragment.lower() in message.lower(), f"{fragment!r} not in: {message}"
    else:
        if error is not None:
            raise error
        assert all(bool(torch.isfinite(t).all()) for t in _tensors(out) if t.is_floating_point())
        if case.expect.check is not None:
            case.expect.check(env, out, inputs)


def test_a_pickle_that_would_create_a_file_is_refused_and_the_file_never_appears(env, tmp_path):
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


def _ksampler_sigmas(model, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """ComfyUI's own denoise rule: the sigmas KSampler runs."""
    import comfy.samplers
    # KSampler takes the ModelPatcher from 2024-06 builds on, the bare model before.
    owner = model if hasattr(comfy.samplers, "calculate_sigmas") else model.model
    return comfy.samplers.KSampler(owner, steps, "cpu", "euler", scheduler, denoise).sigmas.cpu()


def _split_sigmas_denoise(sigmas: torch.Tensor, denoise: float) -> torch.Tensor:
    """ComfyUI's SplitSigmasDenoise (the second output), as the node computes it in hosts that have it."""
    import nodes
    comfy_host.init_builtin_extras(nodes)
    split = nodes.NODE_CLASS_MAPPINGS.get("SplitSigmasDenoise")
    if split is not None:
        return split().get_sigmas(sigmas, denoise)[1]
    steps = len(sigmas) - 1  # the 2024-03 host predates the node; its rule, as its source states it
    return sigmas[-(round(steps * denoise) + 1):]


@pytest.mark.parametrize("rule", ["diffusers (strength)", "round (SplitSigmasDenoise)", "comfyui (denoise)"])
def test_every_scheduler_is_cut_as_its_rule_says_even_with_irregular_lengths(env, rule):
    import comfy.samplers
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        for steps in (1, 2, 3, 7, 13, 50, 1001):
            full = _ksampler_sigmas(env.model, scheduler, steps, 1.0)
            for strength in (0.3, 0.5, 0.999, 1.0):
                inputs = {"model": env.model, "scheduler": scheduler, "steps": steps, "strength": strength,
                          "rule": rule}
                if rule == "comfyui (denoise)":
                    expected = _ksampler_sigmas(env.model, scheduler, steps, strength)
                elif rule == "round (SplitSigmasDenoise)":
                    expected = _split_sigmas_denoise(full, strength)
                else:  # diffusers' get_timesteps on the schedule the scheduler returned
                    expected = full[len(full) - 1 - int((len(full) - 1) * strength):]
                if not bool(torch.isfinite(expected).all()):
                    with pytest.raises(ValueError, match=f"^{STRENGTH}: scheduler: '{scheduler}'.*non-finite"):
                        comfy_host.run_node(STRENGTH, **inputs)
                    continue
                sigmas, executed, start = comfy_host.run_node(STRENGTH, **inputs)
                assert torch.equal(sigmas, expected), (scheduler, steps, strength)
                assert executed == len(sigmas) - 1 and start == float(sigmas[0])


def test_strength_zero_samples_nothing_with_every_scheduler_and_rule(env):
    import comfy.sample
    import comfy.samplers
    latent = _rand(1, 4, 8, 8, seed=5)
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        for rule in ("diffusers (strength)", "round (SplitSigmasDenoise)", "comfyui (denoise)"):
            for steps in (1, 7, 20):
                sigmas, executed, _ = comfy_host.run_node(STRENGTH, model=env.model, scheduler=scheduler,
                                                          steps=steps, strength=0.0, rule=rule)
                assert executed == 0 and sigmas.tolist() == [0.0], (scheduler, rule, steps)
        out = comfy.sample.sample_custom(env.model, torch.randn_like(latent), 7.0, comfy_host.sampler("euler"),
                                         sigmas, env.pos, env.neg, latent, disable_pbar=True, seed=0)
        # ComfyUI scales the latent in and out of the model's space around sampling: equal up to rounding.
        assert torch.allclose(out, latent, rtol=1e-6, atol=1e-6), scheduler
