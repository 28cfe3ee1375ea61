"""Bad input, table-driven, through the pack's nodes inside a real ComfyUI: the cases' vocabulary and runner.

Each case is something users actually feed the nodes: a cut-short download, a web page saved as a
model, a full checkpoint picked as a ControlNet, an RGBA or grey image, one NaN pixel, a mask
painted to the border, a radius larger than the image, a scheduler returning more sigmas than
steps, batches that do not match, a control model made for another base model. Every case ends in one
of two classes:

* ``Refused``: an exception whose message starts with the node id (once) and names the input,
  plus whatever else the case needs it to say (sizes, the file, the fix);
* ``Safe``: a result that is finite and has the right shape, and is bit-exact where the README
  promises it (grey = the grey repeated to RGB, RGBA = its RGB, untouched crop = the original).

Every case finishes within a generous time bound and leaves its inputs as they were. The tables live
beside what they test: ``tests/nodes/test_bad_input_<node>.py`` and ``tests/families/<f>/test_bad_input_<f>.py``;
:func:`check_case` runs one row, the ``bad_input_env`` fixture (conftest) holds what rows share.
"""
from __future__ import annotations

import dataclasses
import io
import json
import struct
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Optional, Tuple, Union

import torch
from safetensors.torch import save as safetensors_bytes

import comfy_host

TIME_LIMIT_S = 30.0  # catches hangs and pathological slowness; rows that sample include a first model load
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

PREP_IMAGE = IMAGE[:, :64, :64]
PREP_MASK = MASK[:64, :64]


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


def cut_in_half(weights: Callable[[Env], dict]) -> Callable[[Env], bytes]:
    """File content: ``weights(env)`` as safetensors, cut off half way (an interrupted download)."""
    return lambda e: (lambda data: _cut(data, len(data) // 2))(safetensors_bytes(weights(e)))


def with_filled(weights: Callable[[Env], dict], key: str, value: float) -> Callable[[Env], bytes]:
    """File content: ``weights(env)`` as safetensors with tensor ``key`` filled with ``value`` (NaN, inf)."""
    return lambda e: safetensors_bytes({**weights(e), key: torch.full_like(weights(e)[key], value)})


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


def check_case(env: Env, case: Case) -> None:
    """Run ``case`` and assert its class: a clear error naming node and input, or a finite, checked result."""
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


def case_ids(cases) -> list:
    """Test ids: the node and the case."""
    return [f"{c.node}: {c.id}" for c in cases]
