#!/usr/bin/env python
"""A toxic word list from human text labels (no scorer), for ``toxlens locate/tokens --toxic-words FILE``.

    python scripts/label_words.py --texts runs/eval-data/probe_train.csv --text-col tweet --label-col class \\
        --positive-labels 0,1 [--limit N] [--top 100] [--min-count 10] [--min-len 3] [--alpha 0.5] [--min-log-odds 2] --out runs/label-words.txt

Ranks words by the weighted log-odds of appearing in a toxic rather than a non-toxic text
(:mod:`lens.label_words`) and writes the ``--top`` best, one per line, each with a ``#`` comment holding its
z-score and text counts (``read_words`` ignores comments). The file is written whole or not at all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens.errors import ToxlensError, exit_status  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--texts", required=True, help="labelled CSV or JSONL")
    ap.add_argument("--text-col", required=True)
    ap.add_argument("--label-col", required=True)
    ap.add_argument("--positive-labels", required=True, help="comma-separated label values counted as toxic")
    ap.add_argument("--limit", type=int, default=None, help="use only the first N rows of --texts")
    ap.add_argument("--top", type=int, default=100)
    ap.add_argument("--min-count", type=int, default=10, help="texts a word must appear in")
    ap.add_argument("--min-len", type=int, default=3, help="letters a word must have")
    ap.add_argument("--alpha", type=float, default=0.5, help="Dirichlet prior per word and class")
    ap.add_argument(
        "--min-log-odds", type=float, default=2.0, help="least log-odds ratio toxic vs non-toxic (default 2)"
    )
    ap.add_argument("--out", required=True, help="the word file to write")
    args = ap.parse_args()

    def run() -> int:
        from lens.io import atomic_file
        from lens.label_words import label_words
        from lens.probe import load_labelled
        from toxlens.probe_args import parse_labels

        positive = parse_labels(args.positive_labels, "--positive-labels")
        assert positive is not None  # a required flag
        if args.limit is not None and args.limit < 1:
            raise ToxlensError(f"--limit must be >= 1, got {args.limit}")
        texts, labels = load_labelled(args.texts, args.text_col, args.label_col, positive, limit=args.limit)
        words = label_words(
            texts, labels, args.top, args.min_count, args.min_len, args.alpha, args.min_log_odds
        )
        if not words:
            raise ToxlensError(f"{args.texts}: no word is more frequent in toxic than in non-toxic texts")
        header = (
            f"# {len(words)} words from {args.texts} ({sum(labels)} toxic / {len(labels) - sum(labels)} "
            f"non-toxic texts by the {args.label_col!r} labels {positive}); weighted log-odds, "
            f"min_count={args.min_count}, min_len={args.min_len}, alpha={args.alpha}, "
            f"min_log_odds={args.min_log_odds}\n"
        )
        body = "".join(
            f"{w.word}  # z={w.z:.2f} toxic={w.toxic_texts} nontoxic={w.nontoxic_texts}\n" for w in words
        )
        out = Path(args.out)
        if not out.parent.is_dir():
            raise ToxlensError(f"--out {args.out!r}: directory {str(out.parent)!r} does not exist")
        atomic_file(out, lambda tmp: Path(tmp).write_text(header + body, encoding="utf-8"))
        print(f"wrote {len(words)} words to {args.out}")
        return 0

    return exit_status("label_words", run)


if __name__ == "__main__":
    sys.exit(main())
