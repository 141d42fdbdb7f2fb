#!/usr/bin/env bash
# The intervention evaluation on smollm2-135m with Davidson et al.'s tweets (needs ../shared/data/davidson).
# Every step's output lands under runs/; each step is skipped when its output already exists.
#   scripts/setup.sh && scripts/eval_smollm2.sh
# Knobs (environment): PROMPTS (100) SAMPLES (10) NEW_TOKENS (20) THRESHOLD (0.3) SAFE (0.15)
#   CORRECT_SCALE (30) STEER_SCALE (-15) SWEEP_PROMPTS (30) SWEEP_SAMPLES (4) BATCH (50)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/toxlens
PROMPTS=${PROMPTS:-100} SAMPLES=${SAMPLES:-10} NEW_TOKENS=${NEW_TOKENS:-20}
THRESHOLD=${THRESHOLD:-0.3} SAFE=${SAFE:-0.15} CORRECT_SCALE=${CORRECT_SCALE:-30} STEER_SCALE=${STEER_SCALE:--15}
SWEEP_PROMPTS=${SWEEP_PROMPTS:-30} SWEEP_SAMPLES=${SWEEP_SAMPLES:-4} BATCH=${BATCH:-50}
LAYER=9

[ -d runs/eval-data ] || .venv/bin/python scripts/make_eval_data.py --out runs/eval-data --n-prompts "$PROMPTS"
[ -d runs/locate-smollm2 ] || $T locate --model smollm2-135m --pairs data/pairs.jsonl --out runs/locate-smollm2
TRAIN=(--model smollm2-135m --data runs/eval-data/probe_train.csv --text-col tweet --label-col class
  --positive-labels 0,1 --layer $LAYER --limit 4000 --balance)
# the monitor: one example per token, positive when its word is profane (see README "Probes and generation")
[ -d runs/probe-token-lexicon-L$LAYER ] ||
  $T probe train "${TRAIN[@]}" --pooling token --token-labels lexicon --out runs/probe-token-lexicon-L$LAYER
# a text classifier at the same layer, for comparison (held-out AUC over texts)
[ -d runs/probe-mean-L$LAYER ] || $T probe train "${TRAIN[@]}" --pooling mean --out runs/probe-mean-L$LAYER

[ -d runs/eval-smollm2 ] || $T evaluate --model smollm2-135m --prompts runs/eval-data/prompts.jsonl \
  --samples "$SAMPLES" --max-new-tokens "$NEW_TOKENS" --seed 0 --top-p 0.9 \
  --conditions none,ablate,steer,edit,rollback,rollback+steer \
  --probe runs/probe-token-lexicon-L$LAYER --threshold "$THRESHOLD" --safe-threshold "$SAFE" \
  --correct-scale "$CORRECT_SCALE" --ablate-from runs/locate-smollm2 --top-k 10 --ablate-kind heads \
  --steer-layer $LAYER --steer-scale "$STEER_SCALE" --perplexity-text runs/eval-data/neutral.txt \
  --batch-size "$BATCH" --out runs/eval-smollm2

[ -d runs/eval-sweep ] || $T evaluate --model smollm2-135m --prompts runs/eval-data/prompts.jsonl \
  --limit-prompts "$SWEEP_PROMPTS" --samples "$SWEEP_SAMPLES" --max-new-tokens "$NEW_TOKENS" --seed 0 --top-p 0.9 \
  --conditions none --probe runs/probe-token-lexicon-L$LAYER --steer-layer $LAYER --sweep-scales 0,-15,-30,-60,-120 \
  --perplexity-text runs/eval-data/neutral.txt --batch-size "$BATCH" --out runs/eval-sweep

.venv/bin/python bench/bench_generate.py --out runs/bench_generate.json
