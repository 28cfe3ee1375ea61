"""Weight files damaged as interrupted downloads and bad exports damage them, for the format tests."""
from pathlib import Path

from safetensors.torch import save_file


def write_truncated(weights: dict, path: Path, cut_bytes: int = 1000) -> Path:
    """``weights`` saved as safetensors at ``path``, its last ``cut_bytes`` bytes cut off; returns ``path``."""
    save_file(weights, str(path))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) - cut_bytes])
    return path


def write_with_nan(weights: dict, key: str, path: Path) -> Path:
    """``weights`` saved as safetensors at ``path`` with one NaN in tensor ``key``; returns ``path``."""
    broken = dict(weights)
    broken[key] = broken[key].clone()
    broken[key].view(-1)[0] = float("nan")
    save_file(broken, str(path))
    return path
