#!/usr/bin/env bash
# The GPU checks of issue 31, in one script (at most 8 minutes on one H100: each piece has its own time limit,
# 180 + 90 + 90 + 120 s; no network; only the default model and random-init Llama-3-8B shapes).
# Results go to $OUT (default benchmarks/results/gpu_check/):
#   1. GRAIT's gradient benchmark at Llama-3-8B shape (benchmarks/grads.py speed --config llama3-8b),
#   2. one LoRA step of an 8B-shaped model with activation checkpointing, peak memory vs `rait plan`
#      (benchmarks/lora_step.py),
#   3. greedy-eval equality in fp32: rait's generation vs transformers' generate (benchmarks/eval.py --equality),
#   4. an export round trip: rait train -> rait export --gguf f16 -> plain transformers (benchmarks/export_roundtrip.py).
#
#   benchmarks/gpu_check.sh          # on a CUDA machine
#   benchmarks/gpu_check.sh --dry    # every piece at toy size on a CPU (the tests' tiny random Llama), to check the script
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/results/gpu_check}
DRY=0
[[ "${1:-}" == "--dry" ]] && DRY=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
mkdir -p "$OUT"
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/gpu_check.log"; }

if [[ $DRY == 1 ]]; then
  DEVICE=cpu SHAPE=tiny
  MODEL="$OUT/tiny-model"
  "$PY" -c "import sys; sys.path.insert(0, 'tests'); from tiny_model import build_tiny_model; build_tiny_model(sys.argv[1])" "$MODEL"
else
  DEVICE=cuda SHAPE=llama3-8b MODEL=default
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu_check.log"
fi

log "1/4 gradient benchmark ($SHAPE)"
if [[ $DRY == 1 ]]; then
  "$PY" benchmarks/grads.py speed --config tiny --device cpu --pool 8 --exact 4 --loop-samples 4 --batch-size 4 --tokens 16
  mv benchmarks/results/grads_tiny_cpu.* "$OUT"/
else
  timeout 180 "$PY" benchmarks/grads.py speed --config llama3-8b --device cuda
  cp benchmarks/results/grads_llama3-8b_cuda.* "$OUT"/
fi

log "2/4 one LoRA step with checkpointing ($SHAPE), peak vs rait plan"
timeout 90 "$PY" benchmarks/lora_step.py --shape "$SHAPE" --device "$DEVICE" --out "$OUT"

log "3/4 greedy-eval equality in fp32"
timeout 90 "$PY" benchmarks/eval.py --model "$MODEL" --device "$DEVICE" --dtype float32 --equality \
  --out "$OUT/eval_equality_${DEVICE}_fp32.json"

log "4/4 export round trip"
timeout 120 "$PY" benchmarks/export_roundtrip.py --model "$MODEL" --device "$DEVICE" --out "$OUT/export"
log "done: $OUT"
