#!/usr/bin/env bash
# Issue 8's measurements on smollm2-135m: every patching method against activation patching on two pair sets
# (the toxic/benign pairs and the IOI set), circuit faithfulness of the activation ranking, and the speed bench.
#   scripts/setup.sh && scripts/methods_smollm2.sh
# Every step's output lands under runs/; a step is skipped when its output already exists.
# Knobs (environment): N_RANDOM (20) IG_STEPS (5)
set -euo pipefail
cd "$(dirname "$0")/.."
T=.venv/bin/toxlens
N_RANDOM=${N_RANDOM:-20} IG_STEPS=${IG_STEPS:-5}

[ -d runs/methods-pairs ] || $T locate --model smollm2-135m --pairs data/pairs.jsonl --method all --positions \
  --ig-steps "$IG_STEPS" --no-progress --out runs/methods-pairs
[ -d runs/methods-ioi ] || $T locate --model smollm2-135m --pairs data/ioi_pairs.jsonl --metric logit-diff \
  --method all --ig-steps "$IG_STEPS" --no-progress --out runs/methods-ioi
# more IG steps and RelP's AH-rule on the toxic pairs (does either close the head gap?)
[ -d runs/methods-pairs-ah-ig10 ] || $T locate --model smollm2-135m --pairs data/pairs.jsonl \
  --method activation,relp,ig --relp-ah-rule --ig-steps 10 --no-progress --out runs/methods-pairs-ah-ig10
[ -d runs/circuit-pairs ] || $T circuit --model smollm2-135m --pairs data/pairs.jsonl --from runs/methods-pairs \
  --n-random "$N_RANDOM" --no-progress --out runs/circuit-pairs
[ -d runs/circuit-ioi ] || $T circuit --model smollm2-135m --pairs data/ioi_pairs.jsonl --metric logit-diff \
  --from runs/methods-ioi --n-random "$N_RANDOM" --no-progress --out runs/circuit-ioi
# heads only: L0.mlp (the token identity at the differing position) carries almost everything above
[ -d runs/circuit-pairs-heads ] || $T circuit --model smollm2-135m --pairs data/pairs.jsonl --from runs/methods-pairs \
  --kind head --n-random "$N_RANDOM" --no-progress --out runs/circuit-pairs-heads
[ -d runs/circuit-ioi-heads ] || $T circuit --model smollm2-135m --pairs data/ioi_pairs.jsonl --metric logit-diff \
  --from runs/methods-ioi --kind head --n-random "$N_RANDOM" --no-progress --out runs/circuit-ioi-heads
for run in pairs ioi; do
  .venv/bin/python - "runs/methods-$run/result.json" <<'PY'
import json, sys
info = json.load(open(sys.argv[1]))
print(sys.argv[1], "m_toxic", round(info["m_toxic"], 3), "m_benign", round(info["m_benign"], 3))
for method, s in info["agreement_with_activation"].items():
    r = {k: (s[k]["pearson"], s[k]["spearman"], s[k]["top10_overlap"]) for k in ("heads", "mlps", "all")}
    print(f"  {method:12s}", {k: tuple(round(x, 3) for x in v) for k, v in r.items()},
          "forward-equivalents", round(s["cost"]["forward_equivalents"], 1))
PY
  cat "runs/circuit-$run/faithfulness.csv" "runs/circuit-$run-heads/faithfulness.csv"
done
[ -f runs/bench-locate.txt ] || .venv/bin/python bench/bench_locate.py | tee runs/bench-locate.txt
