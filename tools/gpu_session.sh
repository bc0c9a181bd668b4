#!/usr/bin/env bash
# One short GPU session for issue #21 (run it through the device tool, on a lent NVIDIA GPU):
#   bash tools/gpu_session.sh            # writes everything under $OUT (default gpu_out/)
# 1. where the 2:4 semi-structured path's flat ~1 ms goes (tools/sparse24.py --diagnose)
# 2. the GPU tests that skip on CPU machines (CUDA AOTInductor package, torch-cuda timing)
# 3. hwprune run --backend torch-cuda --quick: profile, prune to 0.5x, export + bench AOTInductor packages
# Each step has its own time limit so one slow step cannot eat the session; read $OUT/*.log after.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
$PY -m pip install -q -e . > "$OUT/install.log" 2>&1 || $PY -m pip install -q --no-deps -e . >> "$OUT/install.log" 2>&1
timeout 150 $PY tools/sparse24.py --diagnose > "$OUT/sparse24_diagnose.log" 2>&1
timeout 200 $PY -m pytest -q -x tests/test_aoti.py tests/test_deploy_backends.py > "$OUT/gpu_tests.log" 2>&1
timeout 400 $PY -m hwprune run --backend torch-cuda --quick --no-progress --out "$OUT/run" > "$OUT/run.log" 2>&1
echo "exit codes in the logs; done" >> "$OUT/gpu.txt"
