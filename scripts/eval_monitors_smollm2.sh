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

# on SET: ON (the evaluate flags of prompt set SET: dev, heldout or eval) and NONE (its unmonitored run)
on() {
  if [ "$1" = eval ]; then DATA=runs/eval-data NONE=runs/eval-dose-all-smollm2; else
    DATA=runs/eval-data-$1 NONE=runs/eval-project-$1-smollm2; fi
  ON=(--prompts "$DATA/prompts.jsonl" --perplexity-text "$DATA/neutral.txt")
}
# matched RUN SET: SET's `none` samples cut to the lengths of runs/eval-RUN-smollm2, rescored
matched() {
  on "$2"
  [ -f "runs/length-matched-$1.json" ] || .venv/bin/python scripts/length_matched.py --model smollm2-135m \
    --monitored "runs/eval-$1-smollm2" --baseline "$NONE" --out "runs/length-matched-$1.json"
}
# monitored RUN SET FLAGS...: evaluate on SET into runs/eval-RUN-smollm2, then `matched` (skipped with LM=0)
monitored() {
  local run=$1 set=$2
  shift 2
  on "$set"
  [ -d "runs/eval-$run-smollm2" ] || $T evaluate "${PROTOCOL[@]}" "${ON[@]}" "$@" --out "runs/eval-$run-smollm2"
  [ "${LM:-1}" = 0 ] || matched "$run" "$set"
}
# word_list_probe OUT DATA WORDS [FLAGS...] / mil_probe OUT DATA [FLAGS...]: the two monitors, trained on DATA
word_list_probe() {
  local out=$1 data=$2 words=$3
  shift 3
  [ -d "$out" ] || $T probe train --model smollm2-135m --data "$data" --text-col tweet --label-col class \
    --positive-labels 0,1 "$@" --layer 18 --pooling token --token-labels words --token-words "$words" \
    --limit 4000 --balance --out "$out"
}
mil_probe() {
  local out=$1 data=$2
  shift 2
  [ -d "$out" ] || $T probe train --model smollm2-135m --data "$data" --text-col tweet --label-col class \
    --positive-labels 0,1 "$@" --out "$out"
}
label_words() {  # label_words DATA OUT
  [ -f "$2" ] || .venv/bin/python scripts/label_words.py --texts "$1" --text-col tweet --label-col class \
    --positive-labels 0,1 --out "$2"
}
random_monitor() {  # random_monitor LIKE THRESHOLD OUT: fires as often at THRESHOLD on the development `none` samples
  [ -d "$3" ] || .venv/bin/python scripts/random_monitor.py --model smollm2-135m --like "$1" \
    --calibrate runs/eval-project-dev-smollm2 --threshold "$2" --seed 0 --out "$3"
}

scripts/edit_inputs_smollm2.sh  # evaluation data, neurons located from human labels, the MIL monitor
label_words runs/eval-data/probe_train.csv runs/label-words.txt
word_list_probe runs/probe-words runs/eval-data/probe_train.csv runs/label-words.txt
# the controls: random directions firing on as many generated tokens at 0.05, calibrated on the development prompts
for m in mil words; do random_monitor "runs/probe-$m" 0.05 "runs/probe-$m-random"; done

for set in heldout eval; do
  S=$([ "$set" = eval ] || echo "-$set")
  for probe in words words-random mil-random; do
    monitored "rollback-$probe-t005$S" $set --conditions rollback --probe "runs/probe-$probe" --threshold 0.05
  done
  LM=0 monitored "surgery-rollback-words-t005$S" $set --conditions surgery+rollback \
    --edit-from runs/locate-texts-smollm2 --probe runs/probe-words --threshold 0.05
  matched "rollback-t005$S" $set  # the MIL monitor's run at 0.05 (scripts/eval_dose_smollm2.sh)
done
# the development prompts (the random monitors were calibrated on them: real monitors only)
monitored rollback-words-t005-dev dev --conditions rollback --probe runs/probe-words --threshold 0.05
monitored rollback-t005-dev dev --conditions rollback --probe runs/probe-mil --threshold 0.05

# leak check: probe_train.csv holds the tweets the held-out and development prompts were cut from (it leaves out
# only the evaluation prompts'), so both monitors and the word list are rebuilt without them and rerun there
CLEAN=runs/eval-data/probe_train_clean.csv
[ -f $CLEAN ] || .venv/bin/python scripts/exclude_prompts.py --texts runs/eval-data/probe_train.csv --text-col tweet \
  --exclude-prompts runs/eval-data-heldout/prompts.jsonl --exclude-prompts runs/eval-data-dev/prompts.jsonl --out $CLEAN
label_words $CLEAN runs/label-words-clean.txt
word_list_probe runs/probe-words-clean $CLEAN runs/label-words-clean.txt
mil_probe runs/probe-mil-clean $CLEAN
for set in heldout dev; do
  for m in words mil; do
    monitored "rollback-$m-clean-t005-$set" $set --conditions rollback --probe "runs/probe-$m-clean" --threshold 0.05
  done
done
# how much a monitor's cut depends on its training draw: the clean monitors retrained with --seed 1 (and 2), held-out
word_list_probe runs/probe-words-clean-s1 $CLEAN runs/label-words-clean.txt --seed 1
mil_probe runs/probe-mil-clean-s1 $CLEAN --seed 1
word_list_probe runs/probe-words-clean-s2 $CLEAN runs/label-words-clean.txt --seed 2
for probe in words-clean-s1 mil-clean-s1 words-clean-s2; do
  LM=0 monitored "rollback-$probe-t005-heldout" heldout --conditions rollback --probe "runs/probe-$probe" \
    --threshold 0.05
done
# the clean MIL monitor at threshold 0.02 (chosen on the development prompts), its random monitor (calibrated to fire
# as often at 0.02), a rollback budget of 8 (fewer samples stopped?) and surgery + the same monitor
random_monitor runs/probe-mil-clean 0.02 runs/probe-mil-clean-random-t002
for set in dev heldout eval; do
  monitored "rollback-mil-clean-t002-$set" $set --conditions rollback --probe runs/probe-mil-clean --threshold 0.02
done
monitored rollback-mil-clean-random-t002-heldout heldout --conditions rollback \
  --probe runs/probe-mil-clean-random-t002 --threshold 0.02
for set in dev heldout eval; do
  monitored "rollback-mil-clean-t002-b8-$set" $set --conditions rollback --budget 8 --probe runs/probe-mil-clean \
    --threshold 0.02
done
monitored rollback-mil-clean-random-t002-b8-heldout heldout --conditions rollback --budget 8 \
  --probe runs/probe-mil-clean-random-t002 --threshold 0.02
LM=0 monitored surgery-rollback-mil-clean-t002-heldout heldout --conditions surgery+rollback \
  --edit-from runs/locate-texts-smollm2 --probe runs/probe-mil-clean --threshold 0.02
