#!/usr/bin/env python
"""The control for a rollback monitor: a random direction that fires as often.

    python scripts/random_monitor.py --model smollm2-135m --like runs/probe-words \\
        --calibrate runs/eval-project-dev-smollm2 [--condition none] --threshold 0.05 [--seed 0] \\
        --out runs/probe-words-random

Writes a saved probe (``toxlens evaluate --probe DIR``) at the same layer and hook as ``--like``, with the same
standardisation (``mean``, ``std``) and weight norm, but a weight direction drawn uniformly at random (seeded
``torch.Generator``), and a bias set so that, on the generated tokens of the ``--condition`` samples of the
``--calibrate`` evaluate run (each read in its prompt's context, as the monitor reads it), the share of tokens
scoring ``≥ --threshold`` equals the ``--like`` probe's share. Rolling back on it at ``--threshold`` costs about
as many rollbacks as the real monitor while knowing nothing about toxicity: what rollback does by resampling and
stopping alone. Calibrate on a run of other prompts than the ones evaluated. The output is written whole or not
at all; its ``probe.json`` records the source, seed, calibration run and both shares.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lens.errors import ToxlensError, exit_status  # noqa: E402


def top_share_cut(values: Any, share: float) -> float:
    """The ``ceil(share · n)``-th highest of the ``n`` values: at least ``share`` of them are ``>=`` it, with the
    fewest extra (``share · n`` may round up past an integer, hence the small tolerance)."""
    import torch

    n = int(values.numel())
    if n == 0:
        raise ToxlensError("no generated tokens to calibrate on; expected a run whose samples have tokens")
    k = max(1, math.ceil(share * n - 1e-6))
    return float(torch.sort(values.flatten().double(), descending=True).values[k - 1])


def calibrated_bias(z: Any, rate: float, threshold: float) -> float:
    """The bias ``b`` with ``mean(sigmoid(z + b) >= threshold) ≈ rate`` for the logits-without-bias ``z``:
    ``b = logit(threshold) − q`` with ``q`` the ``(1 − rate)`` quantile of ``z`` (the lower of the two order
    statistics around it, so at least ``rate`` of them fire: :func:`top_share_cut`)."""
    if not 0 < rate < 1:
        raise ToxlensError(
            f"the source probe fires on a share {rate:.4g} of the calibration tokens at threshold {threshold}; "
            "expected a share strictly between 0 and 1 (pick another --threshold)"
        )
    return math.log(threshold / (1 - threshold)) - top_share_cut(z, rate)


def read_monitor(probe_dir: str, run: str, condition: str, flag: str) -> tuple[Any, list[dict[str, Any]]]:
    """The saved monitor ``probe_dir`` (given as ``flag``) and the ``condition`` rows of the evaluate run
    ``run``; refuses a probe that is no monitor. Nothing is loaded beyond the two files."""
    from length_matched import read_samples

    from lens.probe_core import Probe

    probe = Probe.load(probe_dir)
    if not probe.is_monitor:
        raise ToxlensError(f"{flag} {probe_dir!r}: {probe.monitor_refusal()}")
    return probe, list(read_samples(run, condition).values())


def monitor_features(
    model: Any, probe: Any, rows: list[dict[str, Any]], batch_size: int, names: tuple[str, str]
) -> Any:
    """The residuals ``probe`` reads (its layer and hook) at every generated token of the evaluate rows
    ``rows`` (``prompt`` text + generated ``tokens``), each read in its prompt's context as the monitor
    reads it during generation; shape ``(n_generated_tokens, d_model)``. ``names``: how the probe and the
    model were given (``--like DIR``, ``--model SPEC``), for the error when the probe was trained on another
    model."""
    import torch

    from lens.token_probe import collect_token_residuals

    spec = probe.metadata.get("spec")
    if spec is not None and spec != model.spec:
        raise ToxlensError(f"{names[0]} was trained on {spec!r}, not on {names[1]}")
    ids, starts = [], []
    for r in rows:
        prompt = model.tokenize(r["prompt"], bool(probe.metadata.get("prepend_bos", False)))
        ids.append(list(prompt) + list(r["tokens"]))
        starts.append(len(prompt))
    feats, _ = collect_token_residuals(model, ids, probe.layer, probe.hook, batch_size)
    keep = torch.cat([torch.arange(len(row)) >= s for row, s in zip(ids, starts)])
    return feats[keep]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--like", required=True, help="the saved monitor to imitate")
    ap.add_argument("--calibrate", required=True, help="a toxlens evaluate output directory")
    ap.add_argument("--condition", default="none", help="its condition whose samples calibrate (none)")
    ap.add_argument("--threshold", type=float, required=True, help="the rollback threshold to match at")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    def run() -> int:
        import torch

        from lens.io import atomic_directory, check_output_dir
        from lens.loading import load_model
        from lens.probe_core import Probe

        if not 0 < args.threshold < 1:
            raise ToxlensError(f"--threshold must be in (0, 1), got {args.threshold}")
        src, rows = read_monitor(args.like, args.calibrate, args.condition, "--like")
        out = Path(args.out)
        check_output_dir(out, False)
        model = load_model(args.model, "cpu")
        names = (f"--like {args.like!r}", f"--model {args.model!r}")
        feats = monitor_features(model, src, rows, args.batch_size, names)
        src_rate = float((src.score(feats) >= args.threshold).double().mean())
        gen = torch.Generator().manual_seed(args.seed)
        w = torch.randn(src.weight.shape[0], generator=gen, dtype=torch.float64)
        w = (w / w.norm() * src.weight.double().norm()).float()
        z = ((feats.float() - src.mean) / src.std) @ w
        bias = calibrated_bias(z, src_rate, args.threshold)
        meta = dict(src.metadata)
        meta.update(
            control={
                "kind": "random monitor: uniform random weight direction, same norm, standardisation, layer "
                "and hook as the source; bias calibrated to the source's firing share",
                "source": str(args.like),
                "seed": args.seed,
                "calibrate": str(args.calibrate),
                "condition": args.condition,
                "threshold": args.threshold,
                "calibration_tokens": int(feats.shape[0]),
                "source_firing_share": src_rate,
                "control_firing_share": float((torch.sigmoid(z + bias) >= args.threshold).float().mean()),
            },
            monitor=True,
        )
        probe = Probe(src.layer, src.hook, src.pooling, w, bias, src.mean, src.std, meta)
        with atomic_directory(out, False) as stage:
            probe.save(stage)
        c = meta["control"]
        print(
            f"wrote {out}: fires on {c['control_firing_share']:.4f} of {c['calibration_tokens']} calibration "
            f"tokens at {args.threshold} (source {src_rate:.4f})"
        )
        return 0

    return exit_status("random_monitor", run)


if __name__ == "__main__":
    sys.exit(main())
