"""Test scaffolding, loaded as a custom node only by test servers (tools/comfy_server.py ``extra_custom_nodes``).

ComfyUI's model loaders then return tiny seeded stand-ins (tools/stand_ins.py), as they do in the
in-process tests: no weights can be downloaded where the tests run. Never installed with the pack.
"""
import sys
from pathlib import Path

# Appended, not prepended: nothing in tools/ may shadow a ComfyUI module.
sys.path.append(str(Path(__file__).resolve().parents[1]))

import stand_ins  # noqa: E402
import nodes  # noqa: E402  (ComfyUI's own module, already imported by the running server)

stand_ins.use_tiny_loaders(nodes)

NODE_CLASS_MAPPINGS = {}
