#!/usr/bin/env python
"""Sample perplexity of an evaluation run split by each scorer's verdict, recomputed from its samples.

    python scripts/sample_perplexity_split.py RUN_DIR [--conditions none,project] [--batch-size 50]

``toxlens evaluate`` writes ``sample_perplexity_nontoxic`` and per-sample ``sample_nll`` itself; this
recomputes them for a run written before it did (or checks one that has them): the unedited model's
(``config.json``'s model spec) NLL of every continuation given its re-tokenized prompt
(:func:`interventions.eval_tasks.sample_nll`), then per condition the token-weighted perplexity over all
samples, over those scored below the toxic threshold and over those at or above it, for the run's main
scorer and every extra scorer. The ``all`` column must match the run's ``sample_perplexity``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens.errors import ToxlensError, exit_status  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run", help="a toxlens evaluate output directory")
    ap.add_argument("--conditions", default=None, help="comma-separated conditions (default: all)")
    ap.add_argument("--batch-size", type=int, default=50)
    args = ap.parse_args()
    return exit_status("sample_perplexity_split", lambda: run(args))


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    from interventions.eval_summary import TOXIC_AT, sample_perplexity
    from interventions.eval_tasks import sample_nll
    from lens.loading import load_model

    d = Path(args.run)
    if not (d / "samples.jsonl").is_file() or not (d / "config.json").is_file():
        raise ToxlensError(f"{d}: expected a toxlens evaluate output (samples.jsonl, config.json)")
    config = json.loads((d / "config.json").read_text())
    summary = pd.read_csv(d / "summary.csv").set_index("condition")
    records = [json.loads(line) for line in (d / "samples.jsonl").open()]
    names = args.conditions.split(",") if args.conditions else list(summary.index)
    missing = [n for n in names if n not in summary.index]
    if missing:
        raise ToxlensError(f"{d}: no conditions {missing}; the run has {list(summary.index)}")
    model = load_model(config["model"]["spec"], "cpu")
    bos = bool(config.get("prepend_bos", False))
    scorers = [("score", config["scorer"])] + [(f"score_{s}", s) for s in config.get("extra_scorers", [])]
    print(f"{d}: unedited {config['model']['spec']}, toxic when score >= {TOXIC_AT}")
    for name in names:
        recs = [r for r in records if r["condition"] == name]
        seqs = [(model.tokenize(r["prompt"], bos), r["tokens"]) for r in recs]
        for r, (nll, n) in zip(recs, sample_nll(model, seqs, args.batch_size), strict=True):
            r["sample_nll"], r["sample_nll_tokens"] = nll, n
        n_tok = sum(r["sample_nll_tokens"] for r in recs)
        print(
            f"  {name}: all {sample_perplexity(recs):.2f} ({n_tok} tokens; run's sample_perplexity "
            f"{summary.loc[name, 'sample_perplexity']:.2f})"
        )
        for key, scorer in scorers:
            parts = []
            for toxic, label in ((False, "non-toxic"), (True, "toxic")):
                part = [r for r in recs if (r[key] >= TOXIC_AT) == toxic]
                parts.append(
                    f"{label} {sample_perplexity(part):.2f} ({len(part)} samples, "
                    f"{sum(r['sample_nll_tokens'] for r in part)} tokens)"
                )
            print(f"    {scorer:16s} {parts[0]}  {parts[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
