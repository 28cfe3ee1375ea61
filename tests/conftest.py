"""Makes the pack importable as ``cnr_pack`` without running its root ``__init__.py``.

The root ``__init__`` registers nodes and needs ComfyUI; core tests must run without it. A bare
package object pointing at the repository gives ``cnr_pack.controlnet_core`` etc., and keeps the
repository root off ``sys.path`` (its ``nodes/`` would shadow ComfyUI's ``nodes.py``).
"""
import sys
import types
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

if "cnr_pack" not in sys.modules:
    _pack = types.ModuleType("cnr_pack")
    _pack.__path__ = [str(REPO_ROOT)]
    sys.modules["cnr_pack"] = _pack
