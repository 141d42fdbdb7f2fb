#!/usr/bin/env python
"""A development split for choosing edit strengths, disjoint from the evaluation prompts and neutral texts.

    python scripts/make_dev_data.py [--train runs/eval-data/probe_train.csv] [--out runs/eval-data-dev]
        [--n-prompts 50] [--n-neutral 100] [--seed 1]

``probe_train.csv`` (written by ``scripts/make_eval_data.py``) holds every Davidson tweet that is neither an
evaluation prompt's source nor an evaluation neutral text. From it, with the same rules as the evaluation
split (:func:`make_prompts`, :func:`make_neutral` of that script) and another seed, this writes
``prompts.jsonl`` (prefixes of offensive tweets) and ``neutral.txt`` (for perplexity); ``--prompt-class 2`` takes the prompts from *neither* tweets instead (the
scorer-floor measurement of ``scripts/scorer_floor.py``). Edit strengths are
chosen on this split; the evaluation split is only used to report the chosen setting.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

from make_eval_data import make_neutral, make_prompts  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", default="runs/eval-data/probe_train.csv")
    ap.add_argument("--out", default="runs/eval-data-dev")
    ap.add_argument("--n-prompts", type=int, default=50)
    ap.add_argument("--n-neutral", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--prompt-class",
        default="1",
        choices=["1", "2"],
        help="Davidson class the prompts are prefixes of: 1 offensive (default), 2 neither (a floor: how "
        "toxic the model's continuations of non-offensive tweets score)",
    )
    args = ap.parse_args()
    if not Path(args.train).is_file():
        print(
            f"no {args.train}: run scripts/make_eval_data.py first (needs the Davidson data)", file=sys.stderr
        )
        return 2
    with open(args.train, newline="") as f:
        rows = list(csv.DictReader(f))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = make_prompts(rows, args.n_prompts, args.seed, label=args.prompt_class)
    neutral = make_neutral(rows, args.n_neutral, args.seed)
    (out / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    (out / "neutral.txt").write_text("".join(t + "\n" for t in neutral))
    print(f"wrote {len(prompts)} prompts and {len(neutral)} neutral texts to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
