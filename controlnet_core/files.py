"""Reading weight files: safetensors memory-mapped, pickles only through weights_only."""
from __future__ import annotations

import json
import math
import mmap
import os
import pickle
import struct
from typing import Dict, Optional

import torch
from torch import Tensor

__all__ = ["WeightFileError", "read_state_dict", "SAFETENSORS_DTYPES"]

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
_PICKLE_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")
_MAX_HEADER = 100 * 1024 * 1024
# Windows has no madvise; there the mapping's pages are released when it is closed.
_CAN_DROP_PAGES = hasattr(mmap, "MADV_DONTNEED")


class WeightFileError(ValueError):
    """A weight file cannot be read as a state dict."""


def _target_dtype(stored: torch.dtype, dtype: Optional[torch.dtype]) -> torch.dtype:
    return dtype if (dtype is not None and stored.is_floating_point) else stored


def _read_safetensors(path: str, dtype: Optional[torch.dtype]) -> Dict[str, Tensor]:
    """Memory-map the file; tensors already in ``dtype`` stay zero-copy views of the mapping.

    Tensors that need a cast are converted straight from the mapping, and the pages they came from
    are dropped right away, so the peak is the cast weights plus one tensor's stored pages.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise WeightFileError(f"{path}: too short to be a safetensors file ({size} bytes)")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(_MAX_HEADER, size - 8):
            raise WeightFileError(f"{path}: not a safetensors file, or truncated (bad header length)")
        try:
            header = json.loads(f.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise WeightFileError(f"{path}: corrupt safetensors header ({e})") from None
        header.pop("__metadata__", None)
        base = 8 + header_len
        end = max((info["data_offsets"][1] for info in header.values()), default=0)
        if base + end > size:
            raise WeightFileError(
                f"{path}: truncated: the header promises {base + end} bytes, the file has {size}; "
                "download it again")
        # ACCESS_COPY: writable for torch.frombuffer, and writes (none are made) would never reach the file.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
    out: Dict[str, Tensor] = {}
    page = mmap.PAGESIZE
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        stored = SAFETENSORS_DTYPES.get(info["dtype"])
        if stored is None:
            raise WeightFileError(f"{path}: tensor {name} has unsupported dtype {info['dtype']}")
        start, stop = info["data_offsets"]
        numel = math.prod(info["shape"])
        if stop - start != numel * stored.itemsize:
            raise WeightFileError(f"{path}: tensor {name}'s size disagrees with its shape; the file is corrupt")
        if numel == 0:
            out[name] = torch.empty(info["shape"], dtype=stored)
            continue
        tensor = torch.frombuffer(mapped, dtype=stored, count=numel, offset=base + start).reshape(info["shape"])
        target = _target_dtype(stored, dtype)
        if target != stored:
            tensor = tensor.to(target)
            if _CAN_DROP_PAGES:
                first = (base + start) // page * page
                mapped.madvise(mmap.MADV_DONTNEED, first, base + stop - first)
        out[name] = tensor
    return out


def _read_pickle(path: str, dtype: Optional[torch.dtype]) -> Dict[str, Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise WeightFileError(
            f"{path}: refused: this pickle needs more than plain tensors to load ({str(e).splitlines()[0]}). "
            "Only weights_only pickles are read, since others can run code; convert the file to "
            ".safetensors with a tool you trust") from None
    except (RuntimeError, EOFError) as e:
        raise WeightFileError(f"{path}: truncated or corrupt checkpoint ({str(e).splitlines()[0]})") from None
    # Training scripts nest the weights: Lightning under "state_dict", TencentARC's adapters under "adapter".
    wrapper = next((k for k in ("state_dict", "adapter") if isinstance(obj, dict) and isinstance(obj.get(k), dict)),
                   None)
    if wrapper is not None:
        obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightFileError(f"{path}: holds no state dict of tensors")
    return {k: v.to(_target_dtype(v.dtype, dtype)) for k, v in obj.items()}


def read_state_dict(path: str, dtype: Optional[torch.dtype] = None) -> Dict[str, Tensor]:
    """Read a weight file on the CPU.

    Args:
        path: a ``.safetensors`` file, or a ``.pth/.pt/.ckpt/.bin`` pickle of tensors.
        dtype: cast floating tensors to this dtype while reading; None keeps the stored dtype.

    Returns:
        The state dict.

    Raises:
        FileNotFoundError: no such file.
        WeightFileError: truncated or corrupt file, or a pickle that needs arbitrary code.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ControlNet weights not found: {path}")
    if path.lower().endswith(_PICKLE_SUFFIXES):
        return _read_pickle(path, dtype)
    return _read_safetensors(path, dtype)
