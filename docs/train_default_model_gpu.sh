#!/usr/bin/env bash
# GPU recipe for the shipped default world model, in phases that each fit one 10-minute
# device call (the device keeps data/ and runs/ between calls while it stays warm; every
# stage is resumable, so a phase that hits its time limit is simply run again).
#
#   bash benchmarks/gpu_wheels.sh                    # here, once: wheels the device lacks -> .whl/
#   # on the device (carry .whl), one call per line:
#   bash docs/train_default_model_gpu.sh data        # collect (16 CPU workers) + autoencoder
#   bash docs/train_default_model_gpu.sh dynamics    # repeat until it reports the stage done
#   bash docs/train_default_model_gpu.sh finetune
#   bash docs/train_default_model_gpu.sh eval        # eval + probes -> $OUT (or benchmarks/results)
#   bash docs/train_default_model_gpu.sh all         # every phase in one go (a machine without limits)
#
# Sizes and steps come from the environment (defaults: the base model, GPU schedule);
# the CPU smoke check of this script is the same with SIZE=tiny and a few steps.
set -euo pipefail
cd "$(dirname "$0")/.."
PHASE=${1:?usage: train_default_model_gpu.sh data|ae|dynamics|finetune|eval|all [DATA] [RUN]}
DATA=${2:-data/shipped}
RUN=${3:-runs/default-gpu}
SIZE=${SIZE:-base}
DEVICE=${DEVICE:-cuda}
EPISODES=${EPISODES:-2000}
WORKERS=${WORKERS:-16}
AE_STEPS=${AE_STEPS:-4000}
DYN_STEPS=${DYN_STEPS:-40000}
FT_STEPS=${FT_STEPS:-2000}
MAX_MIN=${MAX_MIN:-8}            # per stage and call: leaves room inside a 10-minute call
RESULTS=${OUT:-benchmarks/results}/eval_default_gpu
PY=${PYTHON:-python3}
export SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy PYGAME_HIDE_SUPPORT_PROMPT=1

# The device image lacks gymnasium and pygame: install the carried wheels once per machine.
if [ -d .whl ] && ! "$PY" -c "import gymnasium, pygame" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
[ -d /tmp/site ] && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
if ! "$PY" -c "import simcore.world" 2>/dev/null; then
  "$PY" -m pip install -q --no-build-isolation --no-deps -e .
fi
SIMCORE=("$PY" -m simcore)
NOTE="GPU recipe (docs/train_default_model_gpu.sh): size $SIZE, $EPISODES episodes x 100 steps per scene"
TRAIN=("${SIMCORE[@]}" train "$DATA" --out "$RUN" --size "$SIZE" --device "$DEVICE" --max-minutes "$MAX_MIN"
       --ae-steps "$AE_STEPS" --dyn-steps "$DYN_STEPS" --ft-steps "$FT_STEPS" --no-progress --note "$NOTE")

phase_data() {
  if [ ! -d "$DATA" ]; then
    "${SIMCORE[@]}" collect simcore/BouncingBalls-v0 --episodes "$EPISODES" --steps 100 --out "$DATA" --workers "$WORKERS" --seed 0
    "${SIMCORE[@]}" collect simcore/Pong-v0 --episodes "$EPISODES" --steps 100 --out "$DATA" --workers "$WORKERS" --seed 100000
  fi
}
phase_ae()       { "${TRAIN[@]}" --stages ae; }
phase_dynamics() { "${TRAIN[@]}" --stages dynamics; }
phase_finetune() { "${TRAIN[@]}" --stages finetune; }
phase_eval() {
  mkdir -p "$RESULTS"
  "${SIMCORE[@]}" eval --model "$RUN" --rollouts 16 --horizon 64 --long-horizon 1200 --out "$RESULTS" --no-progress
  cp "$RUN/model.safetensors" "$RUN/model_card.json" "$RESULTS/"
}

case "$PHASE" in
  data) phase_data; phase_ae ;;
  ae|dynamics|finetune|eval) "phase_$PHASE" ;;
  all) phase_data; phase_ae; phase_dynamics; phase_finetune; phase_eval ;;
  *) echo "unknown phase $PHASE (data|ae|dynamics|finetune|eval|all)" >&2; exit 2 ;;
esac
