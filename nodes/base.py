"""What every node shares: the category root, the logger, and errors that name the node and input."""
from __future__ import annotations

import logging

LOG = logging.getLogger("ControlNetRefine")
CATEGORY_ROOT = "ControlNet Refine"


def category(leaf: str) -> str:
    """A node category under the pack's one root, e.g. ``category("inpaint")``."""
    return f"{CATEGORY_ROOT}/{leaf}"


class NodeInputError(ValueError):
    """A node input is unusable; the message names the node, the input, the problem and the fix."""

    def __init__(self, node_id: str, input_name: str, problem: str) -> None:
        super().__init__(f"{node_id}: {input_name}: {problem}")
        self.node_id, self.input_name = node_id, input_name
