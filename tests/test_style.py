"""The codebase passes its own lint rules ([tool.ruff] in pyproject.toml): line length, Google docstrings
for the core, no print in pack code."""
import subprocess
import sys

from comfy_host import REPO_ROOT


def test_ruff_check_passes_on_the_whole_repository():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
