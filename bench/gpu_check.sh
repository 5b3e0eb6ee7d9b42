#!/usr/bin/env bash
# Every GPU check and GPU benchmark of the project in one device call, so that a session with a
# GPU spends its few minutes measuring, not setting up. Prepare here, run there:
#
#   make gpu-wheels     # here: the packages the device image lacks, as Python 3.12 wheels in .whl/
#   device run, carry [".whl"], timeout 600:  bash bench/gpu_check.sh
#
# Results (logs and markdown tables) go to $OUT (the device tool's folder) or bench/results/gpu/.
# ../shared does not travel to the device, so the benchmarks use 192x192 demo patches generated
# there by cropseg itself (same shapes and dtypes as the Earth Engine patches).
set -uo pipefail
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed" >&2; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 MPLBACKEND=Agg
step() { echo "== $1 ($(date +%T))"; }
# QUICK=1: the same steps at toy sizes, to check this script on a CPU before spending device time.
if [ "${QUICK:-0}" = 1 ]; then
  N=12; STEPS=2; BATCH=2; WORKERS=2; SAMPLES=40; SCENE=256; MEM="200"; DEV=cpu
else
  N=200; STEPS=50; BATCH=64; WORKERS=12; SAMPLES=2000; SCENE=4096; MEM="2000 4000"; DEV=cuda
fi

step "device"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo 'no nvidia-smi'; } | tee "$OUT/device.txt"
python3 -c "import torch, pytorch_lightning as pl; print('torch', torch.__version__, 'lightning', pl.__version__)" \
  | tee -a "$OUT/device.txt"

step "GPU tests (tests/test_gpu.py)"
python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -15 | tee "$OUT/tests.txt"

step "demo patches and a packed store"
python3 -c "
from cropseg.data.demo import DemoSpec, generate_demo
generate_demo('/tmp/gpu-demo', DemoSpec(num_patches=$N, size=192, seed=0), workers=8)" || exit 1
python3 -m cropseg.cli prepare pack root=/tmp/gpu-demo/data out=/tmp/gpu.store workers=8 | tee "$OUT/pack.txt"

step "issues 7 and 9: Lightning training fed from the store vs the plain loop (Unet-ResNet34, bf16, 192x192)"
python3 bench/bench_train_step.py --precision bf16-mixed --channels-last --batch $BATCH --steps $STEPS \
  --store /tmp/gpu.store --workers $WORKERS 2>&1 | grep -v Warning | tail -8 | tee "$OUT/train_step.md"

step "issue 9: the training DataLoader from the store, $WORKERS workers (CPU side of the GPU machine)"
python3 bench/bench_store.py --root /tmp/gpu-demo/data --samples $SAMPLES --repeats 1 --workers 0 $WORKERS --out "$OUT/store.md" | tail -6

step "issue 8: tiled inference on the GPU"
mkdir -p /tmp/gpu-scenes
python3 bench/bench_predict.py --device $DEV --size $SCENE --mem-sizes $MEM --batch $BATCH --work /tmp/gpu-scenes \
  --json "$OUT/predict.json" 2>&1 | tail -25 | tee "$OUT/predict.md"
step "done"
