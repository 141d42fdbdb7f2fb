#!/usr/bin/env bash
# The inputs issue 7's evaluations share on smollm2-135m (called by eval_edits_smollm2.sh and
# eval_dose_smollm2.sh): the evaluation data from the Davidson tweets, the neurons located from their human
# labels only (hate + offensive vs neither, never a scorer) and the rollback monitor trained from text labels
# only (multiple-instance, `--pooling max`). A step is skipped when its output already exists.
# Knobs (environment): PROMPTS (100) LOCATE_TEXTS (2000)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/toxlens
PROMPTS=${PROMPTS:-100} LOCATE_TEXTS=${LOCATE_TEXTS:-2000}

[ -d runs/eval-data ] || .venv/bin/python scripts/make_eval_data.py --out runs/eval-data --n-prompts "$PROMPTS"
[ -d runs/locate-texts-smollm2 ] || $T locate --model smollm2-135m --texts runs/eval-data/probe_train.csv \
  --text-col tweet --label-col class --positive-labels 0,1 --balance --limit "$LOCATE_TEXTS" \
  --out runs/locate-texts-smollm2
[ -d runs/probe-mil ] || $T probe train --model smollm2-135m --data runs/eval-data/probe_train.csv \
  --text-col tweet --label-col class --positive-labels 0,1 --out runs/probe-mil
exit 0
