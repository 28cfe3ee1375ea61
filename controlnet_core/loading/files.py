"""Reading weight files: safetensors memory-mapped, pickles only through weights_only.

The format comes from the file's first bytes, never its name: a safetensors file renamed to
``.pth`` (or a zip checkpoint renamed to ``.safetensors``) still loads, while a web page, a Git LFS
pointer or an empty file saved under a model's name is named as such. Every malformed file raises
:class:`WeightFileError`, never a bare ``KeyError`` or ``IndexError`` from the parsing.
"""
from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import pickle
import re
import struct
from typing import Callable, Dict, Mapping, Optional

import torch
from torch import Tensor

__all__ = ["WeightFileError", "read_state_dict", "SAFETENSORS_DTYPES"]

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_MAX_HEADER = 100 * 1024 * 1024
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = 0x80
# Bytes that never occur in text files (tab, newline and carriage return excluded).
_CONTROL_BYTES = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# Windows has no madvise; there the mapping's pages are released when it is closed.
_CAN_DROP_PAGES = hasattr(mmap, "MADV_DONTNEED")
_CHUNK = 1 << 22  # elements cast and checked at a time
_DOWNLOAD_AGAIN = "download the model file itself again (the .safetensors release where there is one)"


class WeightFileError(ValueError):
    """A weight file cannot be read as a state dict.

    Attributes:
        path: the file.
        reason: what is wrong with it and what to do, without the path.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _target_dtype(stored: torch.dtype, dtype: Optional[torch.dtype]) -> torch.dtype:
    return dtype if (dtype is not None and stored.is_floating_point) else stored


def _sniff(head: bytes, size: int) -> str:
    """``safetensors``, ``zip`` (torch.save), ``pickle`` (legacy torch.save) or ``unknown``."""
    # Safetensors first: its little-endian header length may well start with the pickle protocol byte 0x80.
    if len(head) > 8:
        (header_len,) = struct.unpack("<Q", head[:8])
        # A plausible length (text never has the high bytes 0) followed by text: a JSON header.
        if 2 <= header_len <= size - 8 and 0x20 <= head[8] < 0x7F:
            return "safetensors"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[:1] == bytes([_PICKLE_PROTOCOL]):
        return "pickle"
    return "unknown"


def _describe_unknown(head: bytes, size: int) -> str:
    """Why ``head`` is no weight file, in words a user can act on."""
    if len(head) > 8 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] > size - 8:
        return (f"truncated: the safetensors header alone is longer than the file's {size} bytes (a cut-short "
                f"download?); {_DOWNLOAD_AGAIN}")
    text = head.lstrip()
    if text.startswith(b"version https://git-lfs"):
        return (f"this is a Git LFS pointer ({size} bytes), not the weights: the repository was cloned without "
                f"Git LFS; {_DOWNLOAD_AGAIN}")
    if re.match(rb"<(!doctype|html|\?xml|head|body)", text[:16].lower()):
        return (f"this is a web page ({size} bytes of HTML), not weights: the download saved an error or login "
                f"page; {_DOWNLOAD_AGAIN}")
    if not _CONTROL_BYTES.search(head):
        sample = head[:40].decode("utf-8", "replace")
        return f"this is a text file ({size} bytes, starting {sample!r}), not weights; {_DOWNLOAD_AGAIN}"
    return f"neither a safetensors file nor a PyTorch checkpoint ({size} bytes); {_DOWNLOAD_AGAIN}"


def _check_entry(path: str, name: str, info, data_size: int) -> None:
    """Raise unless one safetensors header entry is well formed and inside the file."""
    if not isinstance(info, dict):
        raise WeightFileError(path, f"corrupt safetensors header: entry {name!r} is {type(info).__name__}, "
                                    f"not a tensor description; {_DOWNLOAD_AGAIN}")
    for field in ("dtype", "shape", "data_offsets"):
        if field not in info:
            raise WeightFileError(path, f"corrupt safetensors header: tensor {name!r} has no {field!r}; "
                                        f"{_DOWNLOAD_AGAIN}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in SAFETENSORS_DTYPES:
        raise WeightFileError(path, f"tensor {name!r} has dtype {dtype!r}, which this loader does not read "
                                    f"(it reads {', '.join(SAFETENSORS_DTYPES)})")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise WeightFileError(path, f"corrupt safetensors header: tensor {name!r} has shape {shape!r}; "
                                    f"{_DOWNLOAD_AGAIN}")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise WeightFileError(path, f"corrupt safetensors header: tensor {name!r} has data offsets {offsets!r}; "
                                    f"{_DOWNLOAD_AGAIN}")
    if offsets[1] > data_size:
        raise WeightFileError(path, f"truncated: tensor {name!r} ends at byte {offsets[1]} of the data but the file "
                                    f"holds {data_size} data bytes (a cut-short download?); {_DOWNLOAD_AGAIN}")
    if offsets[1] - offsets[0] != math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize:
        raise WeightFileError(path, f"corrupt: tensor {name!r}'s {offsets[1] - offsets[0]} bytes do not hold a "
                                    f"{dtype} tensor of shape {shape}; {_DOWNLOAD_AGAIN}")


def _read_header(path: str, size: int) -> tuple:
    """The checked safetensors header (tensor entries only) and where the data starts."""
    with open(path, "rb") as f:
        (header_len,) = struct.unpack("<Q", f.read(8))
        if header_len > _MAX_HEADER:
            raise WeightFileError(path, f"not a safetensors file: its header would be {header_len} bytes long")
        raw = f.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise WeightFileError(path, f"corrupt safetensors header ({e}); {_DOWNLOAD_AGAIN}") from None
    if not isinstance(header, dict):
        raise WeightFileError(path, f"corrupt safetensors header: a JSON {type(header).__name__}, not an object; "
                                    f"{_DOWNLOAD_AGAIN}")
    header.pop("__metadata__", None)
    base = 8 + header_len
    for name, info in header.items():
        _check_entry(path, name, info, size - base)
    return header, base


def _read_safetensors(path: str, size: int, dtype: Optional[torch.dtype],
                      inspect: Optional[Callable[[Mapping[str, Tensor]], None]]) -> Dict[str, Tensor]:
    """Memory-map the file; tensors already in ``dtype`` stay zero-copy views of the mapping.

    Tensors that need a cast are converted straight from the mapping, and the pages they came from
    are dropped right away, so the peak is the cast weights plus one tensor's stored pages.
    """
    header, base = _read_header(path, size)
    if inspect is not None:
        inspect({name: torch.empty(info["shape"], dtype=SAFETENSORS_DTYPES[info["dtype"]], device="meta")
                 for name, info in header.items()})
    with open(path, "rb") as f:
        # ACCESS_COPY: writable for torch.frombuffer, and writes (none are made) would never reach the file.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    out: Dict[str, Tensor] = {}
    page = mmap.PAGESIZE
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        stored = SAFETENSORS_DTYPES[info["dtype"]]
        start, stop = info["data_offsets"]
        numel = math.prod(info["shape"])
        if numel == 0:
            out[name] = torch.empty(info["shape"], dtype=_target_dtype(stored, dtype))
            continue
        tensor = torch.frombuffer(mapped, dtype=stored, count=numel, offset=base + start).reshape(info["shape"])
        out[name] = _cast_checked(path, name, tensor, dtype)
        if out[name].dtype != stored and _CAN_DROP_PAGES:
            first = (base + start) // page * page
            mapped.madvise(mmap.MADV_DONTNEED, first, base + stop - first)
    return out


def _cast_checked(path: str, name: str, tensor: Tensor, dtype: Optional[torch.dtype]) -> Tensor:
    """``tensor`` in its target dtype; raise if it holds NaN or infinity there."""
    target = _target_dtype(tensor.dtype, dtype)
    if not target.is_floating_point or tensor.numel() == 0:
        return tensor.to(target)
    out = tensor if target == tensor.dtype else torch.empty(tensor.shape, dtype=target)
    source, flat = tensor.reshape(-1), out.view(-1)
    # Cast and check one cache-sized chunk at a time: the check then reads memory the cast has just
    # written instead of making a second pass over gigabytes.
    for start in range(0, flat.numel(), _CHUNK):
        piece = flat[start:start + _CHUNK]
        if out is not tensor:
            piece.copy_(source[start:start + _CHUNK])
        lo, hi = torch.aminmax(piece)  # min and max carry any NaN or infinity
        if not (math.isfinite(float(lo)) and math.isfinite(float(hi))):
            raise WeightFileError(path, _non_finite(name, tensor, target))
    return out


def _non_finite(name: str, stored: Tensor, target: torch.dtype) -> str:
    bad = int((~torch.isfinite(stored)).sum())
    if bad == 0:
        return f"tensor {name!r} has values too large for {target} (up to {float(stored.abs().max()):.3g}); load it " \
               "in float32"
    return (f"tensor {name!r} holds {bad} NaN or infinite values: the weights are broken (a damaged file or a "
            f"diverged training run); {_DOWNLOAD_AGAIN}")


def _refusal(error: Exception) -> str:
    """The safe unpickler's reason in one line, without its advice to load unsafely."""
    text = str(error)
    m = re.search(r"Unsupported global: GLOBAL (\S+?) was not an allowed global", text)
    if m:
        return f"it would call {m.group(1)} while loading"
    m = re.search(r"WeightsUnpickler error:\s*(.+)", text)
    line = m.group(1) if m else (text.splitlines() or [type(error).__name__])[0]
    return f"the safe unpickler cannot read it ({line.strip()[:120]})"


def _read_pickle(path: str, zipped: bool, dtype: Optional[torch.dtype],
                 inspect: Optional[Callable[[Mapping[str, Tensor]], None]]) -> Dict[str, Tensor]:
    # torch.load reads any path ending in .safetensors as safetensors, so such a misnamed
    # checkpoint is handed over as an open file (which cannot be memory-mapped).
    by_path = not path.lower().endswith(".safetensors")
    try:
        with contextlib.ExitStack() as stack:
            source = path if by_path else stack.enter_context(open(path, "rb"))
            # mmap: a zip checkpoint's tensors are mapped, not read, until they are cast below.
            obj = torch.load(source, map_location="cpu", weights_only=True, mmap=zipped and by_path)
    except pickle.UnpicklingError as e:
        raise WeightFileError(
            path, f"refused: {_refusal(e)}. Only pickles of plain tensors are read, since others can run code; "
                  "get the .safetensors release of this model, or convert the file with a tool you trust") from None
    except Exception as e:  # any other failure of the reader means a damaged file
        first = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise WeightFileError(path, f"truncated or corrupt checkpoint ({first}); {_DOWNLOAD_AGAIN}") from None
    # Training scripts nest the weights: Lightning under "state_dict", TencentARC's adapters under "adapter".
    wrapper = next((k for k in ("state_dict", "adapter") if isinstance(obj, dict) and isinstance(obj.get(k), dict)),
                   None)
    if wrapper is not None:
        obj = obj[wrapper]
    if not isinstance(obj, dict):
        raise WeightFileError(path, f"holds a {type(obj).__name__}, not a state dict of tensors")
    odd = next((k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, Tensor))), None)
    if odd is not None:
        raise WeightFileError(path, f"holds no state dict of tensors: entry {odd!r} is a "
                                    f"{type(obj[odd]).__name__}")
    if inspect is not None:
        inspect(obj)
    return {k: _cast_checked(path, k, v, dtype) for k, v in obj.items()}


def read_state_dict(path: str, dtype: Optional[torch.dtype] = None, *,
                    inspect: Optional[Callable[[Mapping[str, Tensor]], None]] = None) -> Dict[str, Tensor]:
    """Read a weight file on the CPU.

    Args:
        path: a ``.safetensors`` file, or a ``.pth/.pt/.ckpt/.bin`` pickle of tensors; the format is
            read from the file's first bytes.
        dtype: cast floating tensors to this dtype while reading; None keeps the stored dtype.
        inspect: called with the keys and shapes before any tensor data is read or cast (meta
            tensors for safetensors, memory-mapped ones for zip checkpoints); it may raise to refuse
            the file early, e.g. a full checkpoint given where a ControlNet is expected.

    Returns:
        The state dict; every floating tensor is finite.

    Raises:
        FileNotFoundError: no such file.
        WeightFileError: an empty, truncated, corrupt or unsafe file, something that is not a weight
            file at all, or weights holding NaN or infinity.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ControlNet weights not found: {path}")
    size = os.path.getsize(path)
    if size == 0:
        raise WeightFileError(path, f"the file is empty (0 bytes): a download or copy that never finished; "
                                    f"{_DOWNLOAD_AGAIN}")
    with open(path, "rb") as f:
        head = f.read(64)
    kind = _sniff(head, size)
    if kind == "safetensors":
        return _read_safetensors(path, size, dtype, inspect)
    if kind in ("zip", "pickle"):
        return _read_pickle(path, kind == "zip", dtype, inspect)
    raise WeightFileError(path, _describe_unknown(head, size))
