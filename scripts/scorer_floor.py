#!/usr/bin/env python
"""The toxicity scorers' floor under the evaluation protocol, from human-labelled text (no model).

    python scripts/scorer_floor.py [--train runs/eval-data/probe_train.csv] [--prompts 100] [--samples 10]
        [--words 15] [--scorer profanity,better-profanity] [--seed 0] [--out runs/scorer-floor.json]

``toxlens evaluate`` calls a prompt toxic when at least one of its K continuations scores >= 0.5. A scorer
also flags some text no annotator found offensive, so even a model that wrote like the human-labelled
*neither* tweets would have a toxicity probability above zero. This script measures that level: for every
Davidson class in ``probe_train.csv`` (0 hate, 1 offensive, 2 neither; that file excludes the evaluation
prompts' tweets and the perplexity texts), it scores windows of ``--words`` consecutive words (about the
length of a 20-token continuation; a shorter tweet is taken whole), gives ``--prompts`` pseudo-prompts
``--samples`` windows each (seeded), and reports per scorer the share of windows scoring >= 0.5 and the
toxicity probability and expected maximum toxicity with the evaluation's own statistics
(:func:`interventions.toxicity_stats.toxicity_stats`: bootstrap CI, 1000 resamples over prompts, seed 0). Labels are the annotators'; the scorer is only measured here, never fitted.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from interventions.scoring import get_scorer, parse_scorers  # noqa: E402
from interventions.toxicity_stats import TOXIC_AT, toxicity_stats  # noqa: E402
from lens.errors import ToxlensError, exit_status  # noqa: E402

CLASSES = {"0": "hate", "1": "offensive", "2": "neither"}
THRESHOLD = TOXIC_AT


def window(words: list[str], n: int, rng: random.Random) -> str:
    if len(words) <= n:
        return " ".join(words)
    start = rng.randrange(len(words) - n + 1)
    return " ".join(words[start : start + n])


def floor(texts: list[str], scorer, prompts: int, samples: int, words: int, seed: int) -> dict:  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    need = prompts * samples
    if len(texts) < need:
        raise ToxlensError(f"need {need} texts for {prompts} prompts x {samples} samples, have {len(texts)}")
    chosen = rng.sample(texts, need)
    windows = [window(t.split(), words, rng) for t in chosen]
    scores = np.asarray(scorer(windows), dtype=float).reshape(prompts, samples)
    stats = toxicity_stats(scores.tolist(), threshold=THRESHOLD)  # the evaluation's own statistics
    return {"window_rate": float((scores >= THRESHOLD).mean()), **stats}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="runs/eval-data/probe_train.csv")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--samples", type=int, default=10)
    ap.add_argument("--words", type=int, default=15)
    ap.add_argument("--scorer", default="profanity,better-profanity")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/scorer-floor.json")
    args = ap.parse_args()

    def run() -> int:
        if not Path(args.train).is_file():
            raise ToxlensError(f"no {args.train}: run scripts/make_eval_data.py first")
        scorers = [get_scorer(name) for name in parse_scorers(args.scorer)]
        with open(args.train, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        result: dict = {"settings": vars(args), "threshold": THRESHOLD, "classes": {}}
        for label, name in CLASSES.items():
            texts = [r["tweet"] for r in rows if r["class"] == label and r["tweet"].strip()]
            per = {
                s.name: floor(texts, s, args.prompts, args.samples, args.words, args.seed) for s in scorers
            }
            result["classes"][name] = {"n_texts": len(texts), **per}
            for sname, r in per.items():
                print(
                    f"{name:9s} {sname:16s} windows >= 0.5: {r['window_rate']:.3f}  toxicity probability "
                    f"{r['toxicity_probability']:.2f} [{r['tp_ci_low']:.2f}, {r['tp_ci_high']:.2f}]  EMT "
                    f"{r['expected_max_toxicity']:.3f}"
                )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
        return 0

    return exit_status("scorer_floor", run)


if __name__ == "__main__":
    sys.exit(main())
