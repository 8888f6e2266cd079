#!/usr/bin/env bash
# One prepared check for a GPU machine (H100/H200), <= 10 minutes. It has no network: what
# it needs beyond torch, transformers and safetensors travels with the repo as wheels in
# .whl/ (see README, "GPU check"); they are installed into /tmp/site first when present.
set -euo pipefail
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
PYTHONUNBUFFERED=1 timeout 560 python3 bench/gpu_check.py "$@"
