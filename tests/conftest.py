"""Makes the pack importable as ``cnr_pack`` (see ``comfy_host.import_pack``) before any test imports it."""
from comfy_host import REPO_ROOT, import_pack

__all__ = ["REPO_ROOT"]

import_pack()
