#!/usr/bin/env bash
# The GPU checks in one command (a few minutes on one GPU; needs no network):
# the tests marked gpu, then 500 L-BFGS evaluations at 512 px with random
# weights in fp32, tf32 and bf16, each run's time read from its metrics.json.
#   benchmarks/gpu.sh                      # from anywhere; runs in the checkout
#   OUT_DIR=/scratch/gpu PYTHON=.venv/bin/python benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT_DIR=${OUT_DIR:-/tmp/nst_exp_gpu}
export NST_IMAGES=${NST_IMAGES:-$PWD/../shared/images}  # the content and style images, as in README's quick start
mkdir -p "$OUT_DIR"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$PYTHON" -m pytest -m gpu -q

for p in fp32 tf32 bf16; do
    "$PYTHON" -m nst_exp image_size=512 iterations=500 model.weights=random device=cuda precision=$p \
        log.image_every=0 log.progress=false checkpoint.every=0 hydra.run.dir="$OUT_DIR/$p"
    "$PYTHON" -c 'import json, sys; m = json.load(open(sys.argv[1] + "/metrics.json"))
print(sys.argv[2], m["status"], "seconds", round(m["seconds"], 2),
      "seconds_per_evaluation", round(m["seconds_per_evaluation"], 5), "evaluations", m["evaluations"])' "$OUT_DIR/$p" $p
done
