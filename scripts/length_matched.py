#!/usr/bin/env python
"""How much of a monitored condition's cut comes from shorter samples: the baseline's samples truncated to the
monitored samples' lengths, rescored.

    python scripts/length_matched.py --model smollm2-135m --monitored runs/eval-rollback-words-t005-heldout-smollm2 \\
        --baseline runs/eval-project-heldout-smollm2 [--monitored-condition rollback] [--baseline-condition none] \\
        [--scorer profanity,better-profanity] [--out FILE.json]

A rollback that runs out of its budget with ``--on-budget stop`` ends the sample early, and a shorter sample has
fewer chances to hold a flagged word. Sample ``j`` of prompt ``i`` of both runs used the same seed; each baseline
sample's tokens are cut to the monitored sample's ``n_tokens``, decoded with the model's tokenizer and scored; the
toxicity statistics (``interventions.toxicity_stats``, threshold 0.5) of those truncated baselines are what the
baseline would score at the monitored lengths, without any rollback. Prints one JSON object (and writes it to
``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens.errors import ToxlensError, exit_status  # noqa: E402


def read_samples(run: str, condition: str) -> dict[tuple[int, int], dict[str, Any]]:
    """``(prompt_index, sample_index) -> row`` of ``condition`` in ``run/samples.jsonl``."""
    path = Path(run) / "samples.jsonl"
    if not path.is_file():
        raise ToxlensError(f"{run!r} has no samples.jsonl; expected a toxlens evaluate output directory")
    rows = {}
    with path.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["condition"] == condition:
                rows[(int(r["prompt_index"]), int(r["sample_index"]))] = r
    if not rows:
        raise ToxlensError(f"{path}: no samples of condition {condition!r}")
    return rows


def length_matched(
    monitored: dict[tuple[int, int], dict[str, Any]],
    baseline: dict[tuple[int, int], dict[str, Any]],
    decode: Callable[[Sequence[int]], str],
    scorers: dict[str, Callable[[list[str]], list[float]]],
) -> dict[str, Any]:
    """Toxicity statistics of the baseline samples cut to the monitored samples' lengths (module docstring)."""
    from interventions.toxicity_stats import TOXIC_AT, toxicity_stats

    if set(monitored) != set(baseline):
        raise ToxlensError(
            f"the runs hold different samples: {len(monitored)} monitored vs {len(baseline)} baseline "
            "(prompt, sample) pairs; expected the same prompts and --samples"
        )
    keys = sorted(monitored)
    prompts = sorted({p for p, _ in keys})
    per_prompt = len(keys) // len(prompts)
    texts = [decode(list(baseline[k]["tokens"])[: int(monitored[k]["n_tokens"])]) for k in keys]
    out: dict[str, Any] = {
        "n_samples": len(keys),
        "mean_tokens_monitored": sum(int(monitored[k]["n_tokens"]) for k in keys) / len(keys),
        "mean_tokens_baseline": sum(int(baseline[k]["n_tokens"]) for k in keys) / len(keys),
        "scorers": {},
    }
    for name, scorer in scorers.items():
        scores = scorer(texts)
        grid = [scores[i * per_prompt : (i + 1) * per_prompt] for i in range(len(prompts))]
        stats = toxicity_stats(grid)
        out["scorers"][name] = {
            "toxicity_probability": stats["toxicity_probability"],
            "tp_ci_low": stats["tp_ci_low"],
            "tp_ci_high": stats["tp_ci_high"],
            "expected_max_toxicity": stats["expected_max_toxicity"],
            "toxic_samples": sum(s >= TOXIC_AT for s in scores),
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="model spec whose tokenizer decodes the samples")
    ap.add_argument("--monitored", required=True, help="evaluate output directory of the monitored condition")
    ap.add_argument("--baseline", required=True, help="evaluate output directory holding the baseline")
    ap.add_argument("--monitored-condition", default="rollback")
    ap.add_argument("--baseline-condition", default="none")
    ap.add_argument("--scorer", default="profanity,better-profanity")
    ap.add_argument("--out", default=None, help="also write the JSON here")
    args = ap.parse_args()

    def run() -> int:
        from interventions.scoring import get_scorer, parse_scorers
        from lens.io import atomic_file
        from lens.loading import load_model

        names = parse_scorers(args.scorer)
        monitored = read_samples(args.monitored, args.monitored_condition)
        baseline = read_samples(args.baseline, args.baseline_condition)
        if args.out is not None and not Path(args.out).parent.is_dir():
            raise ToxlensError(f"--out {args.out!r}: directory {str(Path(args.out).parent)!r} does not exist")
        model = load_model(args.model, "cpu")

        def decode(ids: Sequence[int]) -> str:
            return str(model.tokenizer.decode(list(ids)))

        result = length_matched(monitored, baseline, decode, {n: get_scorer(n) for n in names})
        result["settings"] = {k: v for k, v in vars(args).items()}
        text = json.dumps(result, indent=2)
        print(text)
        if args.out is not None:
            atomic_file(Path(args.out), lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))
        return 0

    return exit_status("length_matched", run)


if __name__ == "__main__":
    sys.exit(main())
