#!/usr/bin/env python
"""A rollback threshold for a monitor, chosen so that it fires as often as a reference (no scorer read).

    python scripts/match_threshold.py --model runs/smollm2-surgery --probe runs/probe-mil-surgery-clean \\
        --calibrate runs/eval-surgery-rollback-milsurg-t002-b8-dev-smollm2 --condition surgery \\
        ( --share 0.224 | --like runs/probe-mil-clean --like-threshold 0.02 [--like-model smollm2-135m] \\
          --like-calibrate runs/eval-project-dev-smollm2 [--like-condition none] ) --out runs/threshold.json

A threshold is not a property a monitor shares with another one: two probes of the same text labels, trained on
two models (an unedited and an edited one), score the same text on different scales. To carry an operating point
over, this script sets ``--probe``'s threshold so that it fires on the same share of generated tokens as the
reference does: the share is given (``--share``) or measured (``--like`` at ``--like-threshold`` on the
``--like-condition`` samples of ``--like-calibrate``, read by ``--like-model``, default ``--model``). Tokens are
the generated tokens of the ``--condition`` samples of ``--calibrate``, each read in its prompt's context as the
monitor reads it during generation (``random_monitor.monitor_features``). With ``n`` tokens and share
``s``, the threshold is the ``ceil(s·n)``-th highest score, so at least that share fires (rollback fires at
score ≥ threshold). Calibrate on other prompts than the ones evaluated. ``--out`` (JSON, written whole or not at
all) records both monitors, runs, shares and the threshold; the threshold is also printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from lens.errors import ToxlensError, exit_status  # noqa: E402


def matched_threshold(scores: Any, share: float) -> float:
    """The threshold ``t`` at which ``mean(scores >= t) >= share`` with the fewest extra firings: the
    ``ceil(share · n)``-th highest score (:func:`random_monitor.top_share_cut`)."""
    from random_monitor import top_share_cut

    if not 0 < share < 1:
        raise ToxlensError(
            f"share {share:.4g} of tokens to fire on; expected a share strictly between 0 and 1"
        )
    return top_share_cut(scores, share)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="the model the monitor watches")
    ap.add_argument("--probe", required=True, help="the saved monitor to set a threshold for")
    ap.add_argument("--calibrate", required=True, help="a toxlens evaluate output directory")
    ap.add_argument("--condition", default="none", help="its condition whose samples calibrate (none)")
    ap.add_argument("--share", type=float, default=None, help="the share of tokens to fire on")
    ap.add_argument("--like", default=None, help="or: the reference monitor whose share to match")
    ap.add_argument("--like-threshold", type=float, default=None)
    ap.add_argument("--like-model", default=None, help="the model the reference watches (default --model)")
    ap.add_argument("--like-calibrate", default=None, help="the evaluate run the reference is measured on")
    ap.add_argument("--like-condition", default="none")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True, help="JSON file")
    args = ap.parse_args()

    def run() -> int:
        from lens.io import atomic_file

        out = Path(args.out)
        if not out.parent.is_dir():
            raise ToxlensError(
                f"--out {args.out!r}: no directory {str(out.parent)!r}; expected an existing one"
            )
        like = [args.like, args.like_threshold, args.like_calibrate]
        if (args.share is None) == (args.like is None):
            raise ToxlensError(
                "give exactly one of --share S and --like DIR (with --like-threshold, --like-calibrate)"
            )
        if args.like is not None and None in like:
            raise ToxlensError("--like needs --like-threshold T and --like-calibrate RUN")
        if args.like_threshold is not None and not 0 < args.like_threshold < 1:
            raise ToxlensError(f"--like-threshold must be in (0, 1), got {args.like_threshold}")
        if args.share is not None and not 0 < args.share < 1:
            raise ToxlensError(f"--share must be in (0, 1), got {args.share}")
        from random_monitor import monitor_features, read_monitor

        from lens.loading import load_model

        # every input is read and checked before a model is loaded; a model both monitors watch loads once
        probe, rows = read_monitor(args.probe, args.calibrate, args.condition, "--probe")
        like_model = args.like_model or args.model
        if args.like is not None:
            ref_probe, ref_rows = read_monitor(args.like, args.like_calibrate, args.like_condition, "--like")
        models: dict[str, Any] = {}

        def scores_of(p: Any, r: list[dict[str, Any]], spec: str, names: tuple[str, str]) -> Any:
            if spec not in models:
                models[spec] = load_model(spec, "cpu")
            return p.score(monitor_features(models[spec], p, r, args.batch_size, names)).float()

        reference: dict[str, Any] | None = None
        share = args.share
        if args.like is not None:
            names = (f"--like {args.like!r}", f"--like-model {like_model!r}")
            ref = scores_of(ref_probe, ref_rows, like_model, names)
            share = float((ref >= args.like_threshold).double().mean())
            reference = {
                "probe": args.like,
                "model": like_model,
                "calibrate": args.like_calibrate,
                "condition": args.like_condition,
                "threshold": args.like_threshold,
                "tokens": int(ref.numel()),
                "firing_share": share,
            }
        scores = scores_of(probe, rows, args.model, (f"--probe {args.probe!r}", f"--model {args.model!r}"))
        threshold = matched_threshold(scores, share)
        result = {
            "threshold": threshold,
            "rule": "the ceil(share * n)-th highest monitor score over the calibration run's generated tokens",
            "probe": args.probe,
            "model": args.model,
            "calibrate": args.calibrate,
            "condition": args.condition,
            "tokens": int(scores.numel()),
            "share": share,
            "firing_share": float((scores >= threshold).double().mean()),
            "reference": reference,
        }
        atomic_file(out, lambda p: Path(p).write_text(json.dumps(result, indent=2) + "\n"))
        print(
            f"threshold {threshold:.6g}: fires on {result['firing_share']:.4f} of {result['tokens']} tokens "
            f"(share to match {share:.4f}); wrote {out}"
        )
        return 0

    return exit_status("match_threshold", run)


if __name__ == "__main__":
    sys.exit(main())
