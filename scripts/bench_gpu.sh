#!/usr/bin/env bash
# Measure the featurizer's GPU path on a machine with an NVIDIA GPU and onnxruntime-gpu
# (pip install -e ".[ml,gpu]"; onnxruntime-gpu replaces the CPU onnxruntime wheel).
# Builds the models into a scratch store unless EDGEFLEET_MODEL_DIR points at built ones, then
# runs `edgefleet bench featurizer` for each model x precision and writes one JSON per run.
# Usage: scripts/bench_gpu.sh [OUT_DIR]   (env MODELS="efficientnet-lite0 resnet50",
#        PRECISIONS="fp16 int8 fp32", EDGEFLEET_GPU_TENSORRT=0 to use CUDA only)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench-gpu}"
mkdir -p "$out"
export EDGEFLEET_MODEL_DIR="${EDGEFLEET_MODEL_DIR:-$PWD/$out/models}"
models="${MODELS:-efficientnet-lite0 resnet50}"
precisions="${PRECISIONS:-fp16 int8 fp32}"
command -v nvidia-smi >/dev/null && nvidia-smi -L || echo "warning: nvidia-smi not found" >&2
python -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_available_providers())"
for m in $models; do
  python -m composition.cli models list --json | grep -q "\"name\": \"$m\"" \
    || python -m composition.cli models build "$m"
  for p in $precisions; do
    echo "== $m $p"
    python -m composition.cli bench featurizer --model "$m" --accelerator gpu --precision "$p" \
      --json > "$out/$m-$p.json"
    python - "$out/$m-$p.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  ran on {r['ran_on']} [{r['engine']}] p50 {r['batch1']['p50_ms']} ms, "
      f"batch 8 {r['throughput_ips_batch8']} img/s, speed-up vs CPU fp32 {r['speedup_p50']}x, "
      f"top-1 agreement {r['top1_agreement_with_fp32']}")
if r["notice"]:
    print("  NOTE:", r["notice"])
PY
  done
done
