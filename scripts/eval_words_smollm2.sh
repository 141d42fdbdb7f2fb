#!/usr/bin/env bash
# Issue 7's rollback with a token monitor whose labels come from the human text labels through a word list
# (text labels -> weighted log-odds words -> token labels; no scorer), its random-monitor control, the edit with
# it, and how much of each cut shorter samples explain. Runs after scripts/eval_dose_smollm2.sh (it reuses that
# script's prompt sets and `none` runs; a condition's rows do not depend on the other conditions of its run).
#   scripts/setup.sh && scripts/eval_dose_smollm2.sh && scripts/eval_words_smollm2.sh
# Every step's output lands under runs/; a step is skipped when its output already exists.
# Knobs (environment): WORKERS (2) BATCH (50) THRESHOLD (0.05)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/toxlens
WORKERS=${WORKERS:-2} BATCH=${BATCH:-50} THRESHOLD=${THRESHOLD:-0.05}
t=${THRESHOLD/./}
PROTOCOL=(--model smollm2-135m --samples 10 --max-new-tokens 20 --seed 0 --top-p 0.9
  --scorer profanity,better-profanity --batch-size "$BATCH" --workers "$WORKERS" --limit-perplexity 20)

scripts/edit_inputs_smollm2.sh  # evaluation data, neurons located from human labels, the MIL monitor
[ -f runs/label-words.txt ] || .venv/bin/python scripts/label_words.py --texts runs/eval-data/probe_train.csv \
  --text-col tweet --label-col class --positive-labels 0,1 --out runs/label-words.txt
[ -d runs/probe-words ] || $T probe train --model smollm2-135m --data runs/eval-data/probe_train.csv \
  --text-col tweet --label-col class --positive-labels 0,1 --layer 18 --pooling token --token-labels words \
  --token-words runs/label-words.txt --limit 4000 --balance --out runs/probe-words
# the control: a random direction firing on as many generated tokens, calibrated on the development prompts
[ -d runs/probe-words-random ] || .venv/bin/python scripts/random_monitor.py --model smollm2-135m \
  --like runs/probe-words --calibrate runs/eval-project-dev-smollm2 --threshold "$THRESHOLD" --seed 0 \
  --out runs/probe-words-random

for set in heldout eval; do
  if [ "$set" = eval ]; then DATA=runs/eval-data NONE=runs/eval-dose-all-smollm2 S=""; else
    DATA=runs/eval-data-$set NONE=runs/eval-project-$set-smollm2 S="-$set"; fi
  ON=(--prompts "$DATA/prompts.jsonl" --perplexity-text "$DATA/neutral.txt")
  [ -d "runs/eval-rollback-words-t$t$S-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" --conditions rollback \
    --probe runs/probe-words --threshold "$THRESHOLD" --out "runs/eval-rollback-words-t$t$S-smollm2"
  [ -d "runs/eval-rollback-words-random-t$t$S-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" \
    --conditions rollback --probe runs/probe-words-random --threshold "$THRESHOLD" \
    --out "runs/eval-rollback-words-random-t$t$S-smollm2"
  [ -d "runs/eval-surgery-rollback-words-t$t$S-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" \
    --conditions surgery+rollback --edit-from runs/locate-texts-smollm2 --probe runs/probe-words \
    --threshold "$THRESHOLD" --out "runs/eval-surgery-rollback-words-t$t$S-smollm2"
  for run in rollback-words rollback-words-random; do
    [ -f "runs/length-matched-$run-t$t$S.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
      --monitored "runs/eval-$run-t$t$S-smollm2" --baseline "$NONE" --out "runs/length-matched-$run-t$t$S.json"
  done
done
