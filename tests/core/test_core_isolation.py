"""The core runs where no ComfyUI module can be imported."""
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = r"""
import importlib.abc, sys, types
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"comfy", "folder_paths", "nodes", "server", "execution", "comfy_extras"}:
            raise ImportError("ComfyUI is blocked in this test: " + name)
sys.meta_path.insert(0, Block())
pack = types.ModuleType("cnr_pack"); pack.__path__ = [sys.argv[1]]; sys.modules["cnr_pack"] = pack
import torch
from cnr_pack.controlnet_core import ControlNet, ControlNetConfig
cfg = ControlNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=(1, 1),
                       transformer_depth=(1, 0), context_dim=32, num_heads=2)
res = ControlNet(cfg)(torch.zeros(1, 4, 8, 8), torch.tensor([1.0]), torch.zeros(1, 3, 32), torch.zeros(1, 3, 64, 64))
loaded = [m for m in sys.modules if m.split(".")[0] in {"comfy", "folder_paths", "nodes"}]
print(len(res.output), loaded)
"""


def test_core_imports_and_runs_with_comfyui_blocked():
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(REPO_ROOT)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "4 []"
