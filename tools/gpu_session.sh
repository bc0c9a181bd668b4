#!/usr/bin/env bash
# One short GPU session (run it through the device tool, on a lent NVIDIA GPU), tests first:
#   bash tools/gpu_session.sh            # writes its logs and tables under $OUT (default gpu_out/)
# 1. the GPU tests that skip on CPU machines (`pytest -m gpu`: torch-cuda unit timing in three
#    precisions, a torch-cuda profile + validate held to an error bound, the 2:4 Linear's masked
#    product and its graph-captured time against dense; then tools/aoti_probe.py (a bare CUDA
#    AOTInductor package compiled and loaded in two processes) and, in its own process, the CUDA
#    AOTInductor package against eager fp16)
# 2. the dense vs 2:4 table (tools/sparse24.py, CUDA graphs; json + md into $OUT). Its --diagnose
#    mode (eager, graph, compile, CUTLASS, 2-D input) found where the eager path's time goes.
# 3. the GPU prune path: hwprune profile --backend torch-cuda at batch 256, hwprune prune --table
#    to 0.7x with halp, checked by measurement on the GPU; then the same with an fp16 table
# The machine has no network: Python packages it lacks (torch-pruning) travel as wheels in .whl/
# (see the device tool's README); hwprune itself is put on PYTHONPATH, nothing is built there.
# Each step has its own time limit so one slow step cannot eat the session; read $OUT/*.log after.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=/tmp/hwprune_site
mkdir -p "$SITE"
: > "$OUT/gpu.txt"
if ls .whl/*.whl > /dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
    > /tmp/hwprune_install.log 2>&1 || cat /tmp/hwprune_install.log >> "$OUT/gpu.txt"
fi
ln -sfn "$PWD/deploy" "$SITE/hwprune_deploy"  # the package-dir mapping pyproject.toml gives it
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  $PY -c "import torch, onnxruntime, torch_pruning; print('torch', torch.__version__, 'cuda', torch.version.cuda,
'ort', onnxruntime.__version__, 'torch_pruning', torch_pruning.__version__,
'cusparselt', torch.backends.cusparselt.is_available())"; } >> "$OUT/gpu.txt" 2>&1
t0=$SECONDS
timeout 120 $PY -m pytest -v -rA -s -m gpu -p no:cacheprovider tests/test_deploy_backends.py > "$OUT/gpu_tests.log" 2>&1
echo "pytest -m gpu tests/test_deploy_backends.py rc=$? in $((SECONDS - t0)) s" >> "$OUT/gpu.txt"
t0=$SECONDS  # a bare package, no hwprune code: compiled in one process, loaded in another (torch or us?)
for s in "cuda compile /tmp/hwprune_probe.pt2" "cuda load /tmp/hwprune_probe.pt2"; do
  echo "== aoti_probe $s" >> "$OUT/aoti.log"
  timeout 80 $PY -X faulthandler tools/aoti_probe.py $s 2>&1 | grep -v "DEBUG" | tail -15 >> "$OUT/aoti.log"
done
echo "aoti_probe (bare CUDA package) in $((SECONDS - t0)) s: see aoti.log" >> "$OUT/gpu.txt"
t0=$SECONDS  # apart: loading a CUDA AOTInductor package segfaulted the whole pytest process (torch 2.11, H200)
TORCHINDUCTOR_COMPILE_THREADS=1 timeout 120 $PY -X faulthandler -m pytest -v -rA -s -m gpu -p no:cacheprovider \
  tests/test_aoti.py >> "$OUT/aoti.log" 2>&1
echo "pytest -m gpu tests/test_aoti.py rc=$? in $((SECONDS - t0)) s" >> "$OUT/gpu.txt"
t0=$SECONDS
timeout 45 $PY tools/sparse24.py --out-dir "$OUT" > /dev/null 2> /tmp/hwprune_sparse24.err
rc=$?
grep -v "Warning\|return cls" /tmp/hwprune_sparse24.err | tail -5 >> "$OUT/gpu.txt"
echo "sparse24 (CUDA graphs) rc=$rc in $((SECONDS - t0)) s" >> "$OUT/gpu.txt"
t0=$SECONDS  # the GPU prune path: a table at a batch where widths matter, a halp search, the closed loop
{ timeout 90 $PY -m hwprune profile --model tiny_resnet --backend torch-cuda --batch 256 --quick \
    --no-progress --out /tmp/hwprune_gpu_t.json &&
  timeout 90 $PY -m hwprune prune --model tiny_resnet --table /tmp/hwprune_gpu_t.json --budget 0.7x --strategy halp --batch 256 \
    --quiet --out /tmp/hwprune_gpu_prune; } > "$OUT/prune.log" 2>&1
echo "profile + prune on torch-cuda rc=$? in $((SECONDS - t0)) s" >> "$OUT/gpu.txt"
t0=$SECONDS  # the same in fp16: a float search spends a half-precision table, the loop measures in fp16
{ timeout 90 $PY -m hwprune profile --model tiny_resnet --backend torch-cuda --precision fp16 --batch 256 --quick \
    --no-progress --out /tmp/hwprune_gpu_t16.json &&
  timeout 90 $PY -m hwprune prune --model tiny_resnet --table /tmp/hwprune_gpu_t16.json --budget 0.7x --strategy halp \
    --batch 256 --quiet --out /tmp/hwprune_gpu_prune16; } > "$OUT/prune_fp16.log" 2>&1
echo "profile + prune on torch-cuda fp16 rc=$? in $((SECONDS - t0)) s" >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
