#!/usr/bin/env bash
# The recipe of the shipped default world model (simcore/models/default). Run from the
# repository root:  bash docs/train_default_model.sh [DATA_DIR] [RUN_DIR]
# This is the CPU recipe that produced the committed model (2 cores, ~95 min of
# training); its model_card.json says what it reached. On a GPU raise the step counts
# and use --size base.
set -euo pipefail
DATA=${1:-data/shipped}
RUN=${2:-runs/default}

simcore collect simcore/BouncingBalls-v0 --episodes 300 --steps 100 --out "$DATA" --workers 2 --seed 0
simcore collect simcore/Pong-v0          --episodes 300 --steps 100 --out "$DATA" --workers 2 --seed 100000

NOTE="CPU-trained (2 cores, no GPU available in this session): small config, short schedule; expect blur and drift"
simcore train "$DATA" --out "$RUN" --size small --stages ae       --ae-steps 1500  --note "$NOTE"
simcore train "$DATA" --out "$RUN" --size small --stages dynamics --dyn-steps 5000 --note "$NOTE"
simcore train "$DATA" --out "$RUN" --size small --stages finetune --ft-steps 300   --note "$NOTE"

mkdir -p simcore/models/default
cp "$RUN/model.safetensors" "$RUN/model_card.json" simcore/models/default/
# held-out evaluation; writes benchmarks/results/eval_default/ and the card's "evaluation"
simcore eval --model default --rollouts 8 --horizon 64 --long-horizon 1200 \
  --out benchmarks/results/eval_default --card --no-progress
