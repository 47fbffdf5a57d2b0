#!/usr/bin/env bash
# The recipe of the shipped default world model (simcore/models/default).
# Usage: bash docs/train_default_model.sh [DATA_DIR] [RUN_DIR]
# On a GPU machine raise the step counts and use --size base; this is the CPU recipe
# that produced the committed model (see its model_card.json for what it reached).
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
