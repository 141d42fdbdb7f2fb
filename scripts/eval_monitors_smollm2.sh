#!/usr/bin/env bash
# Issue 7's rollback monitors against their controls on smollm2-135m: the MIL monitor (text labels) and a token
# monitor whose labels come from the human text labels through a word list (text labels -> weighted log-odds
# words -> token labels; no scorer), each against a random monitor firing on as many generated tokens; surgery
# with the word-list monitor; and how much of each cut shorter samples explain (the `none` samples cut to the
# same lengths). Runs after scripts/eval_dose_smollm2.sh: it reuses that script's prompt sets, its `none` runs
# and its MIL rollback runs at 0.05 (a condition's rows do not depend on the other conditions of its run).
#   scripts/setup.sh && scripts/eval_dose_smollm2.sh && scripts/eval_monitors_smollm2.sh
# Every step's output lands under runs/; a step is skipped when its output already exists.
# Knobs (environment): WORKERS (2) BATCH (50)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/toxlens
WORKERS=${WORKERS:-2} BATCH=${BATCH:-50}
PROTOCOL=(--model smollm2-135m --samples 10 --max-new-tokens 20 --seed 0 --top-p 0.9
  --scorer profanity,better-profanity --batch-size "$BATCH" --workers "$WORKERS" --limit-perplexity 20)

scripts/edit_inputs_smollm2.sh  # evaluation data, neurons located from human labels, the MIL monitor
[ -f runs/label-words.txt ] || .venv/bin/python scripts/label_words.py --texts runs/eval-data/probe_train.csv \
  --text-col tweet --label-col class --positive-labels 0,1 --out runs/label-words.txt
[ -d runs/probe-words ] || $T probe train --model smollm2-135m --data runs/eval-data/probe_train.csv \
  --text-col tweet --label-col class --positive-labels 0,1 --layer 18 --pooling token --token-labels words \
  --token-words runs/label-words.txt --limit 4000 --balance --out runs/probe-words
# the controls: random directions firing on as many generated tokens at 0.05, calibrated on the development prompts
for m in mil words; do
  [ -d "runs/probe-$m-random" ] || .venv/bin/python scripts/random_monitor.py --model smollm2-135m \
    --like "runs/probe-$m" --calibrate runs/eval-project-dev-smollm2 --threshold 0.05 --seed 0 \
    --out "runs/probe-$m-random"
done

for set in heldout eval; do
  if [ "$set" = eval ]; then DATA=runs/eval-data NONE=runs/eval-dose-all-smollm2 S=""; else
    DATA=runs/eval-data-$set NONE=runs/eval-project-$set-smollm2 S="-$set"; fi
  ON=(--prompts "$DATA/prompts.jsonl" --perplexity-text "$DATA/neutral.txt")
  for probe in words words-random mil-random; do
    [ -d "runs/eval-rollback-$probe-t005$S-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" \
      --conditions rollback --probe "runs/probe-$probe" --threshold 0.05 --out "runs/eval-rollback-$probe-t005$S-smollm2"
  done
  [ -d "runs/eval-surgery-rollback-words-t005$S-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" \
    --conditions surgery+rollback --edit-from runs/locate-texts-smollm2 --probe runs/probe-words --threshold 0.05 \
    --out "runs/eval-surgery-rollback-words-t005$S-smollm2"
  for run in rollback rollback-words rollback-words-random rollback-mil-random; do
    [ -f "runs/length-matched-$run-t005$S.json" ] || .venv/bin/python scripts/length_matched.py \
      --model smollm2-135m --monitored "runs/eval-$run-t005$S-smollm2" --baseline "$NONE" \
      --out "runs/length-matched-$run-t005$S.json"
  done
done
# the development prompts (the random monitors were calibrated on them: real monitors only)
DEV=(--prompts runs/eval-data-dev/prompts.jsonl --perplexity-text runs/eval-data-dev/neutral.txt)
for m in words mil; do
  name=$([ "$m" = mil ] && echo rollback || echo rollback-words)
  [ -d "runs/eval-$name-t005-dev-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${DEV[@]}" --conditions rollback \
    --probe "runs/probe-$m" --threshold 0.05 --out "runs/eval-$name-t005-dev-smollm2"
  [ -f "runs/length-matched-$name-t005-dev.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
    --monitored "runs/eval-$name-t005-dev-smollm2" --baseline runs/eval-project-dev-smollm2 \
    --out "runs/length-matched-$name-t005-dev.json"
done
# leak check: probe_train.csv holds the tweets the held-out and development prompts were cut from (it leaves out
# only the evaluation prompts'), so both monitors and the word list are rebuilt without them and rerun there
CLEAN=runs/eval-data/probe_train_clean.csv
[ -f $CLEAN ] || .venv/bin/python scripts/exclude_prompts.py --texts runs/eval-data/probe_train.csv --text-col tweet \
  --exclude-prompts runs/eval-data-heldout/prompts.jsonl --exclude-prompts runs/eval-data-dev/prompts.jsonl --out $CLEAN
[ -f runs/label-words-clean.txt ] || .venv/bin/python scripts/label_words.py --texts $CLEAN \
  --text-col tweet --label-col class --positive-labels 0,1 --out runs/label-words-clean.txt
[ -d runs/probe-words-clean ] || $T probe train --model smollm2-135m --data $CLEAN \
  --text-col tweet --label-col class --positive-labels 0,1 --layer 18 --pooling token --token-labels words \
  --token-words runs/label-words-clean.txt --limit 4000 --balance --out runs/probe-words-clean
[ -d runs/probe-mil-clean ] || $T probe train --model smollm2-135m --data $CLEAN \
  --text-col tweet --label-col class --positive-labels 0,1 --out runs/probe-mil-clean
for set in heldout dev; do
  NONE=runs/eval-project-$set-smollm2
  ON=(--prompts "runs/eval-data-$set/prompts.jsonl" --perplexity-text "runs/eval-data-$set/neutral.txt")
  for m in words mil; do
    run=rollback-$m-clean-t005-$set
    [ -d "runs/eval-$run-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" --conditions rollback \
      --probe "runs/probe-$m-clean" --threshold 0.05 --out "runs/eval-$run-smollm2"
    [ -f "runs/length-matched-$run.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
      --monitored "runs/eval-$run-smollm2" --baseline "$NONE" --out "runs/length-matched-$run.json"
  done
done
# how much a monitor's cut depends on its training draw: the clean monitors retrained with --seed 1 (and 2), held-out
for s in 1 2; do
  for m in words mil; do
    [ "$m-$s" = mil-2 ] && continue
    flags=(--out "runs/probe-$m-clean-s$s")
    [ "$m" = words ] && flags+=(--layer 18 --pooling token --token-labels words --token-words runs/label-words-clean.txt
      --limit 4000 --balance)
    [ -d "runs/probe-$m-clean-s$s" ] || $T probe train --model smollm2-135m --data $CLEAN --text-col tweet \
      --label-col class --positive-labels 0,1 --seed $s "${flags[@]}"
    [ -d "runs/eval-rollback-$m-clean-s$s-t005-heldout-smollm2" ] || $T evaluate "${PROTOCOL[@]}" \
      --prompts runs/eval-data-heldout/prompts.jsonl --perplexity-text runs/eval-data-heldout/neutral.txt \
      --conditions rollback --probe "runs/probe-$m-clean-s$s" --threshold 0.05 \
      --out "runs/eval-rollback-$m-clean-s$s-t005-heldout-smollm2"
  done
done
# the clean MIL monitor at threshold 0.02 (chosen on the development prompts), its random monitor (calibrated to fire
# as often at 0.02) and the length-matched baselines
[ -d runs/probe-mil-clean-random-t002 ] || .venv/bin/python scripts/random_monitor.py --model smollm2-135m \
  --like runs/probe-mil-clean --calibrate runs/eval-project-dev-smollm2 --threshold 0.02 --seed 0 \
  --out runs/probe-mil-clean-random-t002
for set in dev heldout eval; do
  if [ "$set" = eval ]; then DATA=runs/eval-data NONE=runs/eval-dose-all-smollm2; else
    DATA=runs/eval-data-$set NONE=runs/eval-project-$set-smollm2; fi
  for probe in mil-clean mil-clean-random-t002; do
    [ "$probe" != mil-clean ] && [ "$set" != heldout ] && continue
    run=rollback-${probe%-t002}-t002-$set
    [ -d "runs/eval-$run-smollm2" ] || $T evaluate "${PROTOCOL[@]}" --prompts "$DATA/prompts.jsonl" \
      --perplexity-text "$DATA/neutral.txt" --conditions rollback --probe "runs/probe-$probe" --threshold 0.02 \
      --out "runs/eval-$run-smollm2"
    [ -f "runs/length-matched-$run.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
      --monitored "runs/eval-$run-smollm2" --baseline "$NONE" --out "runs/length-matched-$run.json"
  done
done
# the same monitor with a rollback budget of 8 (fewer samples stopped?), and surgery + the clean MIL monitor at 0.02
for set in dev heldout eval; do
  if [ "$set" = eval ]; then DATA=runs/eval-data NONE=runs/eval-dose-all-smollm2; else
    DATA=runs/eval-data-$set NONE=runs/eval-project-$set-smollm2; fi
  run=rollback-mil-clean-t002-b8-$set
  [ -d "runs/eval-$run-smollm2" ] || $T evaluate "${PROTOCOL[@]}" --prompts "$DATA/prompts.jsonl" \
    --perplexity-text "$DATA/neutral.txt" --conditions rollback --budget 8 --probe runs/probe-mil-clean \
    --threshold 0.02 --out "runs/eval-$run-smollm2"
  [ -f "runs/length-matched-$run.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
    --monitored "runs/eval-$run-smollm2" --baseline "$NONE" --out "runs/length-matched-$run.json"
done
run=rollback-mil-clean-random-t002-b8-heldout  # its random control at budget 8
[ -d "runs/eval-$run-smollm2" ] || $T evaluate "${PROTOCOL[@]}" --prompts runs/eval-data-heldout/prompts.jsonl \
  --perplexity-text runs/eval-data-heldout/neutral.txt --conditions rollback --budget 8 \
  --probe runs/probe-mil-clean-random-t002 --threshold 0.02 --out "runs/eval-$run-smollm2"
[ -f "runs/length-matched-$run.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
  --monitored "runs/eval-$run-smollm2" --baseline runs/eval-project-heldout-smollm2 --out "runs/length-matched-$run.json"
[ -d runs/eval-surgery-rollback-mil-clean-t002-heldout-smollm2 ] || $T evaluate "${PROTOCOL[@]}" \
  --prompts runs/eval-data-heldout/prompts.jsonl --perplexity-text runs/eval-data-heldout/neutral.txt \
  --conditions surgery+rollback --edit-from runs/locate-texts-smollm2 --probe runs/probe-mil-clean --threshold 0.02 \
  --out runs/eval-surgery-rollback-mil-clean-t002-heldout-smollm2
