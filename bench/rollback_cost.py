"""The cost of a rollback (bench/bench_generate.py, part 2): a scripted probe forces exactly one rollback
of n tokens; its extra forward tokens must be n (n + 1 with corrective steering)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from generate_probes import MID_SCORE, SAFE_THRESHOLD, THRESHOLD, ScriptedProbe

from interventions.generate import generate
from interventions.policy import Generation, RollbackPolicy
from interventions.sampling import Sampling, word_starts
from lens.model import LensModel
from lens.probe import Probe

ROLLBACK_NS = (1, 4, 8)
CORRECTIVE_SCALE = 4.0


def forced_rollbacks(
    args: argparse.Namespace, model: LensModel, probe: Probe, prompt: str
) -> list[dict[str, Any]]:
    sampling = Sampling(temperature=1.0)
    starts = word_starts(model.tokenizer)
    n_max = args.max_new_tokens

    def run(p: Probe, steer_scale: float) -> Generation:
        policy = RollbackPolicy(safe_threshold=SAFE_THRESHOLD, steer_scale=steer_scale)
        return generate(
            model,
            [prompt],
            n_max,
            seed=args.seed,
            sampling=sampling,
            monitor=p,
            threshold=THRESHOLD,
            policy=policy,
            stop_at_eos=False,  # fixed lengths: the forward_tokens difference is the rollback's cost only
        )[0]

    base = run(probe, 0.0)
    if base.rollbacks:
        raise SystemExit("the reference probe fired on the rollback prompt; pass a probe that does not fire")
    baselines = {0.0: base, CORRECTIVE_SCALE: run(probe, CORRECTIVE_SCALE)}  # no rollback: same tokens
    rows: list[dict[str, Any]] = []
    for n in ROLLBACK_NS:
        # safe point j: generated token j starts a word (the kept text is tokens[:j]); j = 0 (the end of
        # the prompt) is always a safe point. Prefer a word start inside the text.
        if n > n_max:
            print(f"  n={n}: skipped (max_new_tokens={n_max} < n)")
            continue
        cands = [j for j in range(1, n_max - n + 1) if bool(starts[base.tokens[j]])]
        j = cands[0] if cands else 0
        at = j + n - 1
        schedule = {i: MID_SCORE for i in range(j, at)}
        schedule[at] = 1.0
        for scale in (0.0, CORRECTIVE_SCALE):
            baseline = baselines[scale]
            g = run(ScriptedProbe(probe, schedule, THRESHOLD), scale)
            ev = g.rollbacks[0] if g.rollbacks else None
            extra = g.forward_tokens - baseline.forward_tokens
            expected = n + (1 if scale > 0 else 0)
            rows.append(
                {
                    "n_planned": n,
                    "steer_scale": scale,
                    "safe_point": j,
                    "fired_at": at,
                    "rollbacks": [vars(e) for e in g.rollbacks],
                    "discarded": ev.discarded if ev else 0,
                    "recomputed": g.recomputed,
                    "forward_tokens": g.forward_tokens,
                    "forward_tokens_no_rollback": baseline.forward_tokens,
                    "extra_forward_tokens": extra,
                    "expected_extra": expected,
                    "ok": ev is not None and ev.discarded == n and extra == expected == g.recomputed,
                }
            )
    return rows


def print_rollbacks(rows: list[dict[str, Any]]) -> None:
    """The table of :func:`forced_rollbacks`'s rows, with what its columns mean."""
    hdr = (
        f"{'n':>3s} {'steer':>6s} {'safe pt':>7s} {'fired':>5s} {'discarded':>9s} {'recomputed':>10s} "
        f"{'fwd tokens':>10s} {'no-rollback':>11s} {'extra':>5s} {'expected':>8s}  check"
    )
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        print(
            f"{r['n_planned']:3d} {r['steer_scale']:6g} {r['safe_point']:7d} {r['fired_at']:5d} "
            f"{r['discarded']:9d} {r['recomputed']:10d} {r['forward_tokens']:10d} "
            f"{r['forward_tokens_no_rollback']:11d} {r['extra_forward_tokens']:5d} {r['expected_extra']:8d}  "
            f"{'OK' if r['ok'] else 'MISMATCH'}"
        )
    print(
        "safe pt = generated tokens kept (0: back to the end of the prompt); fired = generated index whose score "
        "reached the threshold;\nextra = forward_tokens - forward_tokens of the same call without a rollback. "
        f"steer 0: the safe point's stored logits are reused, so a rollback of n tokens recomputes exactly n "
        f"positions;\nsteer {CORRECTIVE_SCALE:g} (corrective steering, policy.steer_scale): the safe-point "
        "token is fed again with -scale x probe direction added, so n + 1."
    )
