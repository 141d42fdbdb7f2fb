"""``toxlens probe train``'s flags: the parser, the defaults derived from the model, and the checks that
run before anything is loaded (used by :mod:`toxlens.cli_probe`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import model_args

LAYERS_CSV_COLUMNS = ("layer", "accuracy", "auc", "n_train", "n_test")
HOOK_CHOICES = ("resid_post", "resid_pre")
POOLING_CHOICES = ("max", "token", "mean", "last")
AGGREGATION_CHOICES = ("max", "logsumexp", "noisy-or")
TOKEN_POOLINGS = ("max", "token")  # one example per token: usable as generation monitors
# Defaults of the two-flag path (`probe train --model M --data F --positive-labels V --out DIR`), measured
# on smollm2-135m with Davidson's tweets (README "First rollback"):
DEFAULT_LAYER_FRACTION = 0.6  # layer = round(0.6 * n_layers): 18 of SmolLM2-135M's 30
DEFAULT_TOKEN_LIMIT = 4000  # rows read for a token-level probe unless --limit is given


def add_parser(sub: Any) -> None:

    probe = sub.add_parser("probe", help="train a linear toxicity probe on the residual stream")
    psub = probe.add_subparsers(dest="probe_command", required=True)
    p = psub.add_parser(
        "train",
        help="fit a probe at one layer (--layer) or at every layer keeping the best (--all-layers)",
        description="Writes OUT/probe.safetensors and OUT/probe.json (and OUT/layers.csv with --all-layers).",
    )
    model_args(p)
    p.add_argument("--data", required=True, help="labelled CSV (header row) or JSONL file")
    p.add_argument("--text-col", default="text", help="column holding the text (default: text)")
    p.add_argument("--label-col", default="label", help="column holding the label (default: label)")
    p.add_argument(
        "--positive-labels",
        required=True,
        help="comma-separated label values counted as toxic (1), e.g. 0,1 for Davidson's class column",
    )
    p.add_argument(
        "--negative-labels",
        default=None,
        help="comma-separated label values counted as non-toxic (0); when given, any other value is an "
        "error (default: every value not in --positive-labels is negative)",
    )
    p.add_argument(
        "--layer",
        type=int,
        default=None,
        help="the layer whose residual stream is probed (default: round(0.6 x n_layers), e.g. 18 of 30)",
    )
    p.add_argument(
        "--all-layers",
        action="store_true",
        help="fit a probe at every layer, keep the best by held-out ROC AUC, write layers.csv",
    )
    p.add_argument(
        "--hook", default="resid_post", metavar="{resid_post,resid_pre}", help="default: resid_post"
    )
    p.add_argument(
        "--pooling",
        default="max",
        metavar="{max,token,mean,last}",
        help="max (default): a token monitor learnt from text labels only (multiple-instance: a toxic "
        "text has at least one toxic token, every token of a non-toxic text is non-toxic; see "
        "--aggregation); token: every token is one example with a label from --token-labels; mean / "
        "last: text classifiers on pooled residuals (not usable as generation monitors)",
    )
    p.add_argument(
        "--aggregation",
        default="max",
        metavar="{max,logsumexp,noisy-or}",
        help="with --pooling max: how token logits make the text's (default: max)",
    )
    p.add_argument("--steps", type=int, default=300, help="with --pooling max: Adam steps (default: 300)")
    p.add_argument("--lr", type=float, default=0.05, help="with --pooling max: Adam step size (0.05)")
    p.add_argument(
        "--lse-r", type=float, default=5.0, help="with --aggregation logsumexp: sharpness r (default: 5)"
    )
    p.add_argument(
        "--token-labels",
        default="text",
        metavar="{text,lexicon,words}",
        help="with --pooling token: each token gets its text's label (text), 1 when its word is "
        "profane by alt-profanity-check's shipped model (lexicon; the default scorer's model), or 1 when "
        "its word holds a word of --token-words (words) (default: text)",
    )
    p.add_argument(
        "--token-words",
        default=None,
        metavar="FILE",
        help="with --token-labels words: the word list, one per line, '#' starts a comment (e.g. "
        "scripts/label_words.py's list, built from human text labels)",
    )
    p.add_argument(
        "--max-tokens", type=int, default=64, help="with --pooling max|token: tokens kept per text (64)"
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help=f"use only the first N rows of the file (default: all for mean/last, {DEFAULT_TOKEN_LIMIT} "
        "for max/token)",
    )
    p.add_argument(
        "--balance",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="subsample the majority class to the minority count (seeded by --seed) before splitting "
        "(default: on for --pooling max, off otherwise)",
    )
    p.add_argument("--test-fraction", type=float, default=0.25, help="held-out fraction per class (0.25)")
    p.add_argument(
        "--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression (1.0)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of --balance (default: 0)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (speed only)")
    p.add_argument("--prepend-bos", action="store_true", help="put the BOS token in front of every text")
    p.add_argument("--out", required=True, help="output directory (written atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")


def parse_labels(value: str | None, flag: str) -> list[str] | None:
    if value is None:
        return None
    labels = [v.strip() for v in value.split(",")]
    if not labels or any(not v for v in labels):
        raise ToxlensError(f"{flag} {value!r}: expected comma-separated non-empty label values, e.g. 0,1")
    return labels


def check_flags(args: argparse.Namespace) -> None:
    """The flag combinations `probe train` refuses before loading anything (one clear error each)."""
    if args.layer is not None and args.all_layers:
        raise ToxlensError("--layer and --all-layers exclude each other; give one of them")
    if args.layer is not None and args.layer < 0:
        raise ToxlensError(f"--layer must be >= 0, got {args.layer}")
    if args.hook not in HOOK_CHOICES:
        raise ToxlensError(f"unknown --hook {args.hook!r}; expected one of {list(HOOK_CHOICES)}")
    if args.pooling not in POOLING_CHOICES:
        raise ToxlensError(f"unknown --pooling {args.pooling!r}; expected one of {list(POOLING_CHOICES)}")
    if args.pooling in TOKEN_POOLINGS and args.all_layers:
        raise ToxlensError(
            f"--pooling {args.pooling} fits one layer at a time; give --layer L (or nothing: the default "
            "layer) instead of --all-layers, or --pooling mean|last with --all-layers"
        )
    if args.aggregation not in AGGREGATION_CHOICES:
        raise ToxlensError(
            f"unknown --aggregation {args.aggregation!r}; expected one of {list(AGGREGATION_CHOICES)}"
        )
    if args.pooling != "max":
        given = [
            flag
            for flag, dest, default in (
                ("--aggregation", "aggregation", "max"),
                ("--steps", "steps", 300),
                ("--lr", "lr", 0.05),
                ("--lse-r", "lse_r", 5.0),
            )
            if getattr(args, dest) != default
        ]
        if given:
            raise ToxlensError(f"{', '.join(given)} apply to --pooling max only")
    if args.steps < 1:
        raise ToxlensError(f"--steps must be >= 1, got {args.steps}")
    for flag, v in (("--lr", args.lr), ("--lse-r", args.lse_r)):
        if not (math.isfinite(v) and v > 0):
            raise ToxlensError(f"{flag} must be a finite positive number, got {v}")
    if args.token_labels not in ("text", "lexicon", "words"):
        raise ToxlensError(f"unknown --token-labels {args.token_labels!r}; expected text, lexicon or words")
    if (args.token_words is not None) != (args.token_labels == "words"):
        raise ToxlensError(
            "--token-labels words needs --token-words FILE"
            if args.token_words is None
            else f"--token-words applies to --token-labels words only, got --token-labels {args.token_labels}"
        )
    if args.token_words is not None and not Path(args.token_words).is_file():
        raise ToxlensError(f"--token-words file {args.token_words!r} does not exist")
    if args.max_tokens < 1:
        raise ToxlensError(f"--max-tokens must be >= 1, got {args.max_tokens}")
    if args.token_labels != "text" and args.pooling != "token":
        raise ToxlensError("--token-labels applies to --pooling token only")
    if args.limit is not None and args.limit < 1:
        raise ToxlensError(f"--limit must be >= 1, got {args.limit}")
    if not 0 < args.test_fraction < 1:
        raise ToxlensError(f"--test-fraction must be in (0, 1), got {args.test_fraction}")
    if not (math.isfinite(args.C) and args.C > 0):
        raise ToxlensError(f"--C must be a finite positive number, got {args.C}")
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not Path(args.data).is_file():
        raise ToxlensError(f"labelled data file {args.data!r} does not exist")


def balance(labels: list[int], seed: int) -> list[int]:
    """Indices (in file order) keeping every minority-class row and a seeded random subset of the
    majority class of the same size."""
    import torch

    pos = [i for i, v in enumerate(labels) if v == 1]
    neg = [i for i, v in enumerate(labels) if v == 0]
    minority, majority = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(majority), generator=gen)[: len(minority)].tolist()
    return sorted(minority + [majority[k] for k in order])


def default_layer(n_layers: int) -> int:
    """The default probed layer: ``round(DEFAULT_LAYER_FRACTION * n_layers)``, within range."""
    return min(n_layers - 1, max(0, round(DEFAULT_LAYER_FRACTION * n_layers)))


def resolve_defaults(args: argparse.Namespace) -> list[str]:
    """Fill the defaults that depend on --pooling (``--limit``, ``--balance``); return the names filled
    (``--layer`` is filled once the model's depth is known)."""
    filled = []
    if args.limit is None and args.pooling in TOKEN_POOLINGS:
        args.limit = DEFAULT_TOKEN_LIMIT
        filled.append("limit")
    if args.balance is None:
        args.balance = args.pooling == "max"
        if args.balance:
            filled.append("balance")
    return filled


def check_split(n_neg: int, n_pos: int, test_fraction: float) -> None:
    """Refuse a train/test split that leaves a class with too few examples on either side."""
    for name, n in (("negative", n_neg), ("positive", n_pos)):
        k = math.ceil(test_fraction * n)
        if k >= n:
            raise ToxlensError(
                f"--test-fraction {test_fraction} holds out all {n} {name} examples; "
                "lower it or give more data"
            )
