#!/usr/bin/env bash
# One command for a machine with an NVIDIA GPU and CUDA torch (about 3-8 minutes):
#   1. the core parity checks on CUDA in fp16 and bf16 (bench/gpu_parity.py: our residuals against diffusers'
#      ControlNetModel with identical weights, each rounding compared with diffusers' own),
#   2. the sampling benchmark with full-size random SD1.5 and SDXL weights at 512x512 and 1024x1024, side by
#      side with ComfyUI's native ControlNet (bench/bench_sampling_gpu.py), printed as one table of ratios.
# Devices come from ComfyUI's model management (CNR_USE_GPU=1 keeps tools/comfy_host.py from forcing the CPU).
#
#   bench/gpu_check.sh                  # uses $PYTHON, else the `make env` venv if it exists, else python3
#   PYTHON=/path/to/venv/bin/python bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  VENV="$HOME/.cache/controlnet-refine/venv-$(sha256sum tests/requirements.txt | cut -c1-12)"
  if [ -x "$VENV/bin/python" ]; then PYTHON="$VENV/bin/python"; else PYTHON=python3; fi
fi

fail() { echo "gpu_check: $*" >&2; exit 2; }
command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this check needs a machine with an NVIDIA GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || fail "nvidia-smi sees no GPU"
"$PYTHON" - <<'PY' || fail "$PYTHON has no CUDA torch (torch.cuda.is_available() is False); install CUDA torch (make env)"
import sys
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} device(s)")
sys.exit(0 if torch.cuda.is_available() else 1)
PY

export CNR_USE_GPU=1
start=$SECONDS
echo "== 1/2 core parity on CUDA, fp16 and bf16"
timeout 150 "$PYTHON" bench/gpu_parity.py --dtypes fp16 bf16
echo "== 2/2 sampling: SD1.5 and SDXL, 512 and 1024, ComfyUI native vs ControlNet Refine"
timeout 330 "$PYTHON" bench/bench_sampling_gpu.py --families sd15 sdxl --sizes 512 1024 --steps 6 --rounds 3
echo "gpu_check: done in $((SECONDS - start)) s"
