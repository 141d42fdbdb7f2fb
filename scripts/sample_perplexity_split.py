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
import math
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

    from interventions.eval_summary import TOXIC_AT
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
        nlls = sample_nll(model, seqs, args.batch_size)

        total, n_tok = _ppl(nlls, [True] * len(recs))
        print(
            f"  {name}: all {total:.2f} ({n_tok} tokens; run's sample_perplexity {summary.loc[name, 'sample_perplexity']:.2f})"
        )
        for key, scorer in scorers:
            toxic = [r[key] >= TOXIC_AT for r in recs]
            (p_non, n_non), (p_tox, n_tox) = _ppl(nlls, [not t for t in toxic]), _ppl(nlls, toxic)
            print(
                f"    {scorer:16s} non-toxic {p_non:.2f} ({sum(not t for t in toxic)} samples, {n_non} tokens)"
                f"  toxic {p_tox:.2f} ({sum(toxic)} samples, {n_tox} tokens)"
            )
    return 0


def _ppl(nlls: list[tuple[float, int]], keep: list[bool]) -> tuple[float, int]:
    """Token-weighted perplexity of the kept samples and their token count."""
    nll = sum(v for (v, _n), k in zip(nlls, keep, strict=True) if k)
    n = sum(n for (_v, n), k in zip(nlls, keep, strict=True) if k)
    return (math.exp(nll / n) if n else math.nan), n


if __name__ == "__main__":
    sys.exit(main())
