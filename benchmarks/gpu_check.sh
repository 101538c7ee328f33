#!/usr/bin/env bash
# Run the overhead, ensemble and scaling benchmarks on CUDA (quick settings, < 5 minutes on one GPU),
# printing the same figures as on CPU. Usage: bash benchmarks/gpu_check.sh   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi
python -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda:', ok, torch.cuda.get_device_name(0) if ok else ''); sys.exit(0 if ok else 1)"
echo "== overhead (cuda) =="; timeout 120 python benchmarks/overhead.py --device cuda --quick
echo "== ensembles (cuda) =="; timeout 120 python benchmarks/ensembles.py --device cuda --quick
echo "== scaling (cuda) =="; timeout 60 python benchmarks/scaling.py --device cuda --quick
