#!/usr/bin/env bash
# Checks for a machine with a CUDA GPU (run from the repository root), in well under 5 minutes:
#   1. the exactness and moment tests on OpenMM's CUDA platform, both force backends;
#   2. benchmarks/walk_throughput.py on CUDA for K = 1 ... 1024 chains.
# On a machine without a registry, carry cp312 wheels of openmm, openmm-cuda-13,
# acellera-openmmtorch-cu13 and mdtraj in .whl/ (pip download them where a registry is reachable).
set -u
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD}
# openmm-torch's plugin links libtorch from the torch package
export LD_LIBRARY_PATH=$(python3 -c "import torch, os; print(os.path.dirname(torch.__file__))")/lib:${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - <<'PY'
import openmm, torch
names = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
print("openmm", openmm.__version__, names, "torch", torch.__version__, "cuda", torch.cuda.is_available())
print("plugin load failures:", openmm.Platform.getPluginLoadFailures())
import openmmtorch  # noqa: F401
print("openmmtorch imports")
PY
echo "== exactness on CUDA"
JAMUN_TEST_PLATFORMS=CUDA timeout 240 python3 -m pytest -q -p no:cacheprovider tests/test_walk_exact.py tests/test_walk_statistics.py 2>&1 | tail -15
echo "== walk throughput on CUDA"
timeout 300 python3 benchmarks/walk_throughput.py --platform CUDA --chains 1 8 64 256 1024 --steps 50
