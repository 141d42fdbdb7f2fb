"""Helpers shared by every ``toxlens`` subcommand module (imported by them, importing none of them)."""

from __future__ import annotations

import argparse
import hashlib
import math
import re
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="gpt2",
        help="HF/TransformerLens name, local HF directory, .gguf file, or smollm2-135m (default: gpt2)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])


def device_map_args(p: argparse.ArgumentParser) -> None:
    """``--device-map`` and ``--max-memory``: spread a model too large for one device (needs accelerate)."""
    from lens.placement import DEVICE_MAPS

    p.add_argument(
        "--device-map",
        default=None,
        choices=list(DEVICE_MAPS),
        help="spread the model over GPUs, CPU and disk with accelerate (instead of --device)",
    )
    p.add_argument(
        "--max-memory",
        default=None,
        metavar="DEV=SIZE,...",
        help="with --device-map: per-device caps, e.g. 0=20GiB,cpu=64GiB (keys: CUDA index, cpu, mps)",
    )


def check_device_map_args(args: argparse.Namespace) -> None:
    from lens.placement import check_device_map

    check_device_map(getattr(args, "device_map", None), args.device, getattr(args, "max_memory", None))


def load_from_args(args: argparse.Namespace) -> Any:
    """:func:`lens.loading.load_model` with --model, --device, --dtype (and --device-map, --max-memory)."""
    from lens.loading import load_model

    return load_model(
        args.model,
        args.device,
        args.dtype,
        device_map=getattr(args, "device_map", None),
        max_memory=getattr(args, "max_memory", None),
    )


def token_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--toxic-words",
        default=None,
        help="word list, one per line (default: derived from "
        "alt-profanity-check's shipped model; see `toxlens tokens`)",
    )
    p.add_argument(
        "--multi-token",
        default="skip",
        choices=["skip", "first"],
        help="words that are no single token: skip them (default) or use their first token",
    )


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def select_rows(labels: list[int], limit: int | None, balance: bool, seed: int) -> list[int]:
    """Row indices (in file order) to use: with ``balance`` every row of the minority class and a seeded
    random subset of the majority class of the same size; then, with ``limit``, a seeded random subset of
    at most ``limit`` rows (half of each class when balanced)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    pos = [i for i, v in enumerate(labels) if v == 1]
    neg = [i for i, v in enumerate(labels) if v == 0]

    def pick(rows: list[int], k: int) -> list[int]:
        return [rows[j] for j in torch.randperm(len(rows), generator=gen)[:k].tolist()]

    if balance:
        n = min(len(pos), len(neg))
        if limit is not None:
            n = min(n, limit // 2)
        return sorted(pick(pos, n) + pick(neg, n))
    rows = list(range(len(labels)))
    return sorted(pick(rows, limit)) if limit is not None and limit < len(rows) else rows


SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes at most 64 bits


def check_seed(seed: int, streams: int = 1, flag: str = "--seed") -> None:
    """``seed`` .. ``seed + streams - 1`` must all be valid 64-bit generator seeds."""
    if seed < 0 or seed + max(streams, 1) - 1 > SEED_MAX:
        raise ToxlensError(
            f"{flag} must be in [0, {SEED_MAX - max(streams, 1) + 1}] (64-bit seeds, one per sample), got {seed}"
        )


def check_model_early(args: argparse.Namespace, layers: dict[str, int | None] | None = None) -> None:
    """Check --model, --device and layer flags before the model is loaded (no weights are read).

    A layer must be >= 0 and, when the number of layers can be read from a local config.json,
    below it.
    """
    from lens.loading import check_model_spec, peek_n_layers, resolve_device

    check_model_spec(args.model)
    resolve_device(args.device)
    check_device_map_args(args)
    n_layers = peek_n_layers(args.model)
    for flag, layer in (layers or {}).items():
        if layer is None:
            continue
        if layer < 0 or (n_layers is not None and layer >= n_layers):
            bound = f"[0, {n_layers})" if n_layers is not None else ">= 0"
            raise ToxlensError(
                f"{flag} (a steering layer) must be in {bound} for model {args.model!r}, got {layer}"
            )


def check_limit(value: int | None, flag: str) -> None:
    if value is not None and value < 1:
        raise ToxlensError(f"{flag} must be >= 1 (omit it to use every item), got {value}")


VALUE_VECTOR = re.compile(r"^L\d+\.mlp:\d+$")


def check_steer_vector_spec(spec: str, probe: str | None) -> None:
    """A ``--steer-vector`` is ``probe`` (with ``--probe``), an existing FILE.safetensors or L<layer>.mlp:<n>."""
    if spec == "probe":
        if probe is None:
            raise ToxlensError("--steer-vector probe needs --probe DIR (whose direction is the vector)")
    elif spec.endswith(".safetensors"):
        if not Path(spec).is_file():
            raise ToxlensError(f"steering vector file {spec!r} does not exist")
    elif not VALUE_VECTOR.match(spec):
        raise ToxlensError(
            f"unknown --steer-vector {spec!r}; expected 'probe', a FILE.safetensors, or L<layer>.mlp:<neuron> "
            "(e.g. L7.mlp:123)"
        )


def check_finite(value: float | None, flag: str) -> None:
    if value is not None and not math.isfinite(value):
        raise ToxlensError(f"{flag} must be a finite number, got {value}")


def parse_edit_params(items: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--edit-param METHOD.KEY=VALUE`` (repeatable; VALUE is JSON, e.g. ``0.6`` or ``[10,11]``, else a
    string) → ``{method: {key: value}}``, checked against the edit registry's parameters."""
    import json

    from interventions.edit_methods import get_method

    out: dict[str, dict[str, Any]] = {}
    for item in items or []:
        head, eq, raw = item.partition("=")
        method, dot, key = head.partition(".")
        if not eq or not dot or not method or not key:
            raise ToxlensError(
                f"--edit-param expects METHOD.KEY=VALUE (e.g. dampen.min_auroc=0.6), got {item!r}"
            )
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method, {})[key] = value
    for method, params in out.items():
        get_method(method).resolve(params)
    return out


def pair_metric_args(p: argparse.ArgumentParser) -> None:
    """``--metric`` and ``--prepend-bos`` for commands scoring contrast pairs (plus :func:`token_args`)."""
    token_args(p)
    p.add_argument(
        "--metric",
        default="toxic-mass",
        choices=["toxic-mass", "logit-diff"],
        help="toxic-mass (default): log probability mass on the toxic token set at the last "
        "position; logit-diff: per-pair toxic_target vs benign_target",
    )
    p.add_argument("--prepend-bos", action="store_true", help="put the BOS token in front of every prompt")


def check_pair_metric_inputs(args: argparse.Namespace) -> None:
    """Validate ``--pairs`` (and, for ``--metric logit-diff``, its targets) and ``--toxic-words`` before
    any model is loaded."""
    from lens.prompts import check_pair_lines, read_pair_lines
    from lens.tokens import read_words

    objs = check_pair_lines(read_pair_lines(args.pairs), args.pairs)
    if args.metric == "logit-diff":
        for number, obj in objs:
            where = f"{args.pairs}, line {number}"
            if "toxic_target" not in obj or "benign_target" not in obj:
                raise ToxlensError(
                    f"{where}: --metric logit-diff needs fields 'toxic_target' and 'benign_target'"
                )
            if obj["toxic_target"] == obj["benign_target"]:
                raise ToxlensError(
                    f"{where}: toxic_target and benign_target are both {obj['toxic_target']!r}; "
                    "expected two different tokens (the logit difference would be 0)"
                )
    if args.toxic_words is not None:
        read_words(args.toxic_words)


def pair_metric(args: argparse.Namespace, model: Any, pairs: Any) -> Any:
    """The :class:`lens.metrics.Metric` chosen by ``--metric`` (``--toxic-words``, ``--multi-token``)."""
    from lens.metrics import ToxicLogMass, logit_diff_from_pairs
    from lens.tokens import toxic_token_set

    if args.metric == "logit-diff":
        return logit_diff_from_pairs(pairs, model.tokenizer)
    tokens = toxic_token_set(model.tokenizer, args.toxic_words, args.multi_token)
    return ToxicLogMass(tokens.ids, tokens.to_dict())
