#!/usr/bin/env bash
# The recipe of the shipped default world model (simcore/models/default):
# collect -> train -> eval -> card. Run from the repository root:
#
#   bash docs/train_default_model.sh [DATA_DIR] [RUN_DIR]
#
# 2 CPU cores, about 65 minutes in all: collection ~1 min, encoding the recordings'
# latents once ~7 min (cached afterwards), dynamics 45 min (plus ~5 min of learning-
# curve evaluation), held-out evaluation ~6 min. Resumable: run it again after an interruption and each
# stage continues from RUN_DIR/train_state.safetensors.
#
# The autoencoder is the committed default model's (trained by the previous recipe:
# 1,500 steps, 23 min on 2 cores; `simcore train DATA --stages ae` retrains one).
# CONTINUE=1 starts the DiT from the committed model too: more training for a model
# that needs it, instead of a fresh start.
set -euo pipefail
DATA=${1:-data/default}
RUN=${2:-runs/default}
MINUTES=${MINUTES:-45}

[ -d "$DATA/pong" ] || simcore collect simcore/Pong-v0 --episodes 400 --steps 100 --out "$DATA/pong" \
  --workers 2 --seed 100000 --policy sticky          # every action held 3-8 steps: the model must read the keys
[ -d "$DATA/balls" ] || simcore collect simcore/BouncingBalls-v0 --episodes 400 --steps 100 --out "$DATA/balls" \
  --workers 2 --seed 0

PARTS=ae
[ -n "${CONTINUE:-}" ] && PARTS=all || true
# the recipe (benchmarks/NOTES.md, "World-model recipe ablations"): the DiT predicts the
# clean latent (x0, not v), every clip is teacher-forced and learns only its noisy last
# frame, logit-normal noise levels, loss weight on moving latents, the action on every
# token, EMA weights, a 4-frame context
RECIPE=(--size small --set dit.target=x0 --set dit.action_tokens=true --set dit.window=4
        --tf-share 1.0 --no-context-loss --tau-dist logit-normal --tau-loc 1.0 --motion-weight 5
        --ema 0.999 --eval-every 1000 --no-progress)
NOTE="CPU-trained on 2 cores by docs/train_default_model.sh"
simcore train "$DATA/pong" "$DATA/balls" --out "$RUN" --init-from default --init-parts "$PARTS" \
  --stages dynamics --dyn-steps 20000 --max-minutes "$MINUTES" "${RECIPE[@]}" --note "$NOTE"
# The self-forcing fine-tune (`--stages finetune --ft-steps 300`) was tried after this
# stage and lowered every held-out figure (one-step PSNR 30.9 -> 15.7 dB on bouncing
# balls, 38.9 -> 25.3 on Pong; simcore/models/default/curves.jsonl): the recipe ships the
# dynamics stage's EMA weights. One Euler step per frame measured best (1 vs 4 steps:
# benchmarks/results/sampler_choice_default.json): the shipped config samples with 1.
python - "$RUN" <<'PY'
import json, sys
from pathlib import Path
from simcore.checkpoint import load_model, save_model
run = Path(sys.argv[1])
model = load_model(run)
model.cfg.sample_steps = 1
card = json.loads((run / "model_card.json").read_text())
card.update(name="default", sampler={"sample_steps": 1, "chosen_by": "benchmarks/sampler_choice.py"})
save_model(model, "simcore/models/default", card)
PY
cp "$RUN/curves.png" "$RUN/curves.jsonl" simcore/models/default/
# held-out evaluation (seeds 1,000,000+); writes benchmarks/results/eval_default/ and the card's "evaluation"
simcore eval --model default --rollouts 16 --horizon 64 --long-horizon 1200 \
  --out benchmarks/results/eval_default --card --no-progress
# the dreamed-Pong figures: P7 control, ball visibility, PSNR (16 held-out rollouts, bootstrap intervals)
python benchmarks/pong_dream_report.py --model default --rollouts 16 --horizon 64 \
  --out benchmarks/results/pong_dream_default.json
