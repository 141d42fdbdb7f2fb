"""Draw the figures of a ``toxlens evaluate`` directory, or of one ``toxlens generate --json`` trace.

``python -m figures.render_eval DIR [--out OUT]`` writes ``toxicity_by_condition.html``,
``toxicity_vs_perplexity.html`` and a few ``probe_trace_*.html`` to ``DIR/figures/`` (or ``OUT``); see
:func:`figures.interventions.render_evaluation`. ``python -m figures.render_eval TRACE.json [--out X.html]
[--threshold T]`` draws one generation trace (default output: ``TRACE.html`` beside it). Prints the
written paths; a bad input is one ``error:`` line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from figures.interventions import render_evaluation, render_trace
from lens.errors import ToxlensError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m figures.render_eval", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("path", help="a `toxlens evaluate` output dir, or a `toxlens generate --json` file")
    parser.add_argument(
        "--out", default=None, help="output dir (default: DIR/figures) or HTML file for a trace"
    )
    parser.add_argument(
        "--threshold", type=float, default=None, help="trace only: the rollback threshold line"
    )
    args = parser.parse_args(argv)
    path = Path(args.path)
    try:
        if path.is_file() and path.suffix == ".json":
            out = Path(args.out) if args.out is not None else path.with_suffix(".html")
            paths = [render_trace(path, out, args.threshold)]
        else:
            paths = render_evaluation(path, args.out)
    except ToxlensError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p in paths:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
