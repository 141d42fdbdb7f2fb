#!/usr/bin/env bash
# Issue 7's evaluation on smollm2-135m: neurons located from Davidson et al.'s human labels, every edit
# method against `none` and the random control, the best edit with rollback, two scorers, and the export.
#   scripts/setup.sh && scripts/eval_edits_smollm2.sh      (needs ../shared/data/davidson/labeled_data.csv)
# Every step's output lands under runs/; a step is skipped when its output already exists.
# Knobs (environment): PROMPTS (100) SAMPLES (10) NEW_TOKENS (20) LOCATE_TEXTS (2000) THRESHOLD (0.5)
#   BEST (surgery: the edit combined with rollback, and exported) BATCH (50)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/toxlens
PROMPTS=${PROMPTS:-100} SAMPLES=${SAMPLES:-10} NEW_TOKENS=${NEW_TOKENS:-20} LOCATE_TEXTS=${LOCATE_TEXTS:-2000}
THRESHOLD=${THRESHOLD:-0.5} BEST=${BEST:-surgery} BATCH=${BATCH:-50}

PROMPTS="$PROMPTS" LOCATE_TEXTS="$LOCATE_TEXTS" scripts/edit_inputs_smollm2.sh  # data, located neurons, the MIL monitor

[ -d runs/eval-edits-smollm2 ] || $T evaluate --model smollm2-135m --prompts runs/eval-data/prompts.jsonl \
  --samples "$SAMPLES" --max-new-tokens "$NEW_TOKENS" --seed 0 --top-p 0.9 \
  --conditions "none,dampen,dampen-random,surgery,project,subtract,$BEST+rollback,rollback" \
  --dampen-from runs/locate-texts-smollm2 --probe runs/probe-mil --threshold "$THRESHOLD" \
  --scorer profanity,better-profanity --perplexity-text runs/eval-data/neutral.txt \
  --batch-size "$BATCH" --out runs/eval-edits-smollm2

# the edit folded into the weights, as a standard Hugging Face model directory
[ -d "runs/smollm2-$BEST" ] || $T edit --model smollm2-135m --method "$BEST" --from runs/locate-texts-smollm2 \
  --out "runs/smollm2-$BEST"
