"""``toxlens generate``'s flags and the checks run on them before anything loads.

The rollback and steering flag groups (with the sets of flags that only make sense with ``--probe`` or a
steering vector) are defined here once; :mod:`toxlens.cli_generate` runs the command.
"""

from __future__ import annotations

import argparse
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import (
    check_finite,
    check_seed,
    check_steer_vector_spec,
    device_map_args,
    model_args,
)

ON_BUDGET_CHOICES = ("stop", "continue")
STEER_POSITION_CHOICES = ("prompt", "generated", "all")
STEER_SITE_CHOICES = ("resid_pre", "resid_post")
# Rollback flags: they only mean something with --threshold (defaults: interventions.policy.RollbackPolicy).
ROLLBACK_FLAGS = {
    "safe_threshold": "--safe-threshold",
    "budget": "--budget",
    "on_budget": "--on-budget",
    "correct_scale": "--correct-scale",
    "correct_tokens": "--correct-tokens",
    "correct_layer": "--correct-layer",
}
STEER_FLAGS = {
    "steer_layer": "--steer-layer",
    "steer_scale": "--steer-scale",
    "steer_positions": "--steer-positions",
    "steer_site": "--steer-site",
}


def add_parser(sub: Any) -> None:

    p = sub.add_parser(
        "generate",
        help="generate text, optionally monitored by a probe (rollback) and/or steered",
        description="Prints the continuation of every --prompt (with --json: one JSON object per line).",
    )
    model_args(p)
    device_map_args(p)
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeat for several)")
    p.add_argument("--max-new-tokens", type=int, required=True, help="tokens to generate per prompt")
    p.add_argument(
        "--seed", type=int, default=0, help="prompt i draws with a generator seeded seed+i (default: 0)"
    )
    g = p.add_argument_group("sampling")
    g.add_argument("--temperature", type=float, default=1.0, help="default: 1.0")
    g.add_argument("--top-k", type=int, default=None, help="keep the K most likely tokens (default: all)")
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass (default: off)")
    g.add_argument("--greedy", action="store_true", help="argmax decoding (ignores the three above)")
    g.add_argument("--ignore-eos", action="store_true", help="do not stop a sequence at the EOS token")
    m = p.add_argument_group("probe monitor and rollback")
    m.add_argument("--probe", default=None, help="directory of a probe saved by `toxlens probe train`")
    m.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="roll back when a generated token's probe score is >= T (without it, scores are only recorded)",
    )
    m.add_argument(
        "--safe-threshold",
        type=float,
        default=None,
        help="safe-point score bound (default: half of --threshold)",
    )
    m.add_argument("--budget", type=int, default=None, help="rollbacks per sequence (default: 4)")
    m.add_argument(
        "--on-budget",
        default=None,
        metavar="{stop,continue}",
        help="what happens past the budget: stop at the safe point, or continue (default: stop)",
    )
    m.add_argument(
        "--correct-scale",
        type=float,
        default=None,
        help="after a rollback, subtract A x probe direction at the corrective layer (default: 0, off)",
    )
    m.add_argument(
        "--correct-tokens", type=int, default=None, help="positions the correction lasts (default: 8)"
    )
    m.add_argument(
        "--correct-layer",
        type=int,
        default=None,
        help="resid_pre layer of the correction (default: the probe's layer)",
    )
    m.add_argument(
        "--no-forbid",
        action="store_true",
        help="allow the token that started a discarded span to be drawn again at the safe point",
    )
    s = p.add_argument_group("steering")
    s.add_argument(
        "--steer-vector",
        default=None,
        help="'probe' (the --probe direction), FILE.safetensors (tensor 'vector'), or L7.mlp:123 "
        "(an MLP neuron's value vector)",
    )
    s.add_argument("--steer-layer", type=int, default=None, help="layer to steer at (required with a vector)")
    s.add_argument("--steer-scale", type=float, default=None, help="scale of the vector (default: 1.0)")
    s.add_argument(
        "--steer-positions",
        default=None,
        metavar="{prompt,generated,all}",
        help="positions steered (default: all)",
    )
    s.add_argument(
        "--steer-site",
        default=None,
        metavar="{resid_pre,resid_post}",
        help="hook of the steering layer (default: resid_pre)",
    )
    p.add_argument(
        "--batch-size", type=int, default=16, help="prompts per batch (output does not depend on it)"
    )
    p.add_argument("--prepend-bos", action="store_true", help="put the BOS token in front of every prompt")
    p.add_argument("--json", action="store_true", help="one JSON object per prompt, one per line")


def default_safe_threshold(threshold: float) -> float:
    """The safe-point bound when none is given: half the rollback threshold (always below it)."""
    return threshold / 2


def _given(args: argparse.Namespace, flags: dict[str, str]) -> list[str]:
    return [flag for dest, flag in flags.items() if getattr(args, dest) is not None]


def check_flags(args: argparse.Namespace) -> None:
    if args.max_new_tokens < 1:
        raise ToxlensError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_seed(args.seed, len(args.prompt))
    for flag in ("temperature", "top_p", "threshold", "safe_threshold", "correct_scale", "steer_scale"):
        check_finite(getattr(args, flag), "--" + flag.replace("_", "-"))
    if args.threshold is None:
        extra = _given(args, ROLLBACK_FLAGS) + (["--no-forbid"] if args.no_forbid else [])
        if extra:
            raise ToxlensError(f"{', '.join(extra)} only apply with --threshold")
    else:
        if args.probe is None:
            raise ToxlensError("--threshold needs --probe DIR (the probe whose score is thresholded)")
        if not 0 < args.threshold <= 1:
            raise ToxlensError(f"--threshold must be in (0, 1], got {args.threshold}")
    if args.on_budget is not None and args.on_budget not in ON_BUDGET_CHOICES:
        raise ToxlensError(
            f"unknown --on-budget {args.on_budget!r}; expected one of {list(ON_BUDGET_CHOICES)}"
        )
    if args.steer_vector is None:
        extra = _given(args, STEER_FLAGS)
        if extra:
            raise ToxlensError(f"{', '.join(extra)} only apply with --steer-vector")
        return
    if args.steer_layer is None:
        raise ToxlensError("--steer-vector needs --steer-layer L")
    if args.steer_positions is not None and args.steer_positions not in STEER_POSITION_CHOICES:
        raise ToxlensError(
            f"unknown --steer-positions {args.steer_positions!r}; expected one of {list(STEER_POSITION_CHOICES)}"
        )
    if args.steer_site is not None and args.steer_site not in STEER_SITE_CHOICES:
        raise ToxlensError(
            f"unknown --steer-site {args.steer_site!r}; expected one of {list(STEER_SITE_CHOICES)}"
        )
    check_steer_vector_spec(args.steer_vector, args.probe)
