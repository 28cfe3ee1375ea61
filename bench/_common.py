"""Shared benchmark helpers: importing the pack without its root ``__init__``, peak memory."""
import resource
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def import_pack() -> None:
    """Make ``cnr_pack`` importable without executing the root ``__init__`` (which needs ComfyUI)."""
    if "cnr_pack" not in sys.modules:
        pack = types.ModuleType("cnr_pack")
        pack.__path__ = [str(REPO_ROOT)]
        sys.modules["cnr_pack"] = pack


def peak_rss_mib() -> float:
    """This process's peak resident set size so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20
