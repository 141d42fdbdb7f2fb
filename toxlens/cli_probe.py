"""``toxlens probe train``: fit a linear toxicity probe on the residual stream and save it.

Thin layer over :mod:`lens.probe`: flags are checked and the labelled data read before the model is
loaded; the output directory is staged and renamed (:func:`lens.io.atomic_directory`). Every choice
that changes a number is recorded in ``probe.json`` (through the probe's metadata).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import file_sha256
from toxlens.probe_args import (
    AGGREGATION_CHOICES,
    DEFAULT_LAYER_FRACTION,
    DEFAULT_TOKEN_LIMIT,
    HOOK_CHOICES,
    LAYERS_CSV_COLUMNS,
    POOLING_CHOICES,
    TOKEN_POOLINGS,
    add_parser,
    balance,
    check_flags,
    check_split,
    default_layer,
    parse_labels,
    resolve_defaults,
)

__all__ = [
    "AGGREGATION_CHOICES",
    "DEFAULT_LAYER_FRACTION",
    "DEFAULT_TOKEN_LIMIT",
    "HOOK_CHOICES",
    "LAYERS_CSV_COLUMNS",
    "POOLING_CHOICES",
    "TOKEN_POOLINGS",
    "add_parser",
    "balance",
    "default_layer",
    "parse_labels",
    "resolve_defaults",
    "run",
    "train",
]


def run(args: argparse.Namespace) -> int:
    if args.probe_command == "train":
        return train(args)
    raise ToxlensError(f"unknown probe command {args.probe_command!r}; expected 'train'")


def train(args: argparse.Namespace) -> int:
    import time

    from lens.io import atomic_directory, check_output_dir
    from lens.probe import Probe, collect_residuals, data_hash, fit_probe, load_labelled

    check_flags(args)
    positive = parse_labels(args.positive_labels, "--positive-labels")
    assert positive is not None
    negative = parse_labels(args.negative_labels, "--negative-labels")
    if negative is not None and set(positive) & set(negative):
        raise ToxlensError(
            f"labels {sorted(set(positive) & set(negative))} are both in --positive-labels and "
            "--negative-labels"
        )
    out = Path(args.out)
    check_output_dir(out, args.overwrite)
    defaulted = resolve_defaults(args)

    texts, labels = load_labelled(args.data, args.text_col, args.label_col, positive, negative, args.limit)
    n_rows, n_pos_all = len(labels), sum(labels)
    if min(n_pos_all, n_rows - n_pos_all) < 2:
        raise ToxlensError(
            f"{args.data}: {n_pos_all} rows have a {args.label_col!r} value in --positive-labels "
            f"{','.join(positive)} and {n_rows - n_pos_all} do not; need at least 2 of each class"
        )
    if args.balance:
        keep = balance(labels, args.seed)
        texts, labels = [texts[i] for i in keep], [labels[i] for i in keep]
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    check_split(n_neg, n_pos, args.test_fraction)
    words = None
    if args.token_words is not None:
        from lens.tokens import read_words

        words = read_words(args.token_words)

    from lens.loading import load_model

    t0 = time.perf_counter()
    model = load_model(args.model, args.device, args.dtype)
    if args.layer is None and not args.all_layers:
        args.layer = default_layer(model.n_layers)
        defaulted.append("layer")
    if args.layer is not None and args.layer >= model.n_layers:
        raise ToxlensError(
            f"--layer {args.layer} is out of range: model {args.model!r} has {model.n_layers} layers "
            f"(0..{model.n_layers - 1})"
        )
    layers = list(range(model.n_layers)) if args.all_layers else [args.layer]
    import torch

    if args.pooling not in TOKEN_POOLINGS:
        feats = collect_residuals(
            model, texts, layers, args.batch_size, args.hook, args.pooling, args.prepend_bos
        )
    y = torch.tensor(labels, dtype=torch.long)
    meta: dict[str, Any] = {
        "spec": model.spec,
        "model": model.info.to_dict(),
        "data": str(args.data),
        "data_sha256": file_sha256(args.data),
        "data_hash": data_hash(texts, labels),
        "text_col": args.text_col,
        "label_col": args.label_col,
        "positive_labels": positive,
        "negative_labels": negative,
        "token_words": (
            {"file": str(args.token_words), "sha256": file_sha256(args.token_words), "n_words": len(words)}
            if words is not None
            else None
        ),
        "limit": args.limit,
        "balance": bool(args.balance),
        "defaults_applied": {
            k: {
                "layer": f"round({DEFAULT_LAYER_FRACTION} * n_layers)",
                "limit": f"{DEFAULT_TOKEN_LIMIT} rows for --pooling max|token",
                "balance": "on for --pooling max",
            }[k]
            for k in defaulted
        },
        "max_tokens": args.max_tokens if args.pooling in TOKEN_POOLINGS else None,
        "prepend_bos": bool(args.prepend_bos),
        "batch_size": args.batch_size,
        "counts": {
            "rows_read": n_rows,
            "positive_read": n_pos_all,
            "negative_read": n_rows - n_pos_all,
            "used": len(labels),
            "positive": n_pos,
            "negative": n_neg,
        },
        "all_layers": bool(args.all_layers),
        "selection": "max held-out auc; ties: higher accuracy, then lower layer" if args.all_layers else None,
    }
    probes: dict[int, Probe] = {}
    if args.pooling == "token":
        from lens.token_probe import train_token_probe

        probes[layers[0]] = train_token_probe(
            model,
            texts,
            labels,
            layers[0],
            args.token_labels,
            args.hook,
            words=words,
            max_tokens=args.max_tokens,
            test_fraction=args.test_fraction,
            seed=args.seed,
            C=args.C,
            batch_size=args.batch_size,
            prepend_bos=args.prepend_bos,
            metadata=meta,
        )
    if args.pooling == "max":
        from lens.mil_probe import train_mil_probe

        probes[layers[0]] = train_mil_probe(
            model,
            texts,
            labels,
            layers[0],
            args.hook,
            args.aggregation,
            max_tokens=args.max_tokens,
            test_fraction=args.test_fraction,
            seed=args.seed,
            C=args.C,
            steps=args.steps,
            lr=args.lr,
            lse_r=args.lse_r,
            batch_size=args.batch_size,
            prepend_bos=args.prepend_bos,
            metadata=meta,
        )
    for layer in layers if args.pooling not in TOKEN_POOLINGS else []:
        probes[layer] = fit_probe(
            feats[layer], y, layer, args.hook, args.pooling, args.test_fraction, args.seed, args.C, meta
        )
    best = max(layers, key=lambda k: (probes[k].metadata["auc"], probes[k].metadata["accuracy"], -k))
    probe = probes[best]
    rows = [{c: probes[k].metadata[c] if c != "layer" else k for c in LAYERS_CSV_COLUMNS} for k in layers]
    if args.all_layers:
        probe.metadata["layers"] = rows
    probe.metadata["wall_time_s"] = time.perf_counter() - t0

    with atomic_directory(out, args.overwrite) as stage:
        probe.save(stage)
        if args.all_layers:
            with (stage / "layers.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(LAYERS_CSV_COLUMNS))
                writer.writeheader()
                writer.writerows(rows)

    if args.all_layers:
        print(f"{'layer':>5}  {'accuracy':>8}  {'auc':>6}  {'n_train':>7}  {'n_test':>6}")
        for r in rows:
            mark = "  <- best" if r["layer"] == best else ""
            print(
                f"{r['layer']:>5}  {r['accuracy']:>8.4f}  {r['auc']:>6.4f}  {r['n_train']:>7}  "
                f"{r['n_test']:>6}{mark}"
            )
    m = probe.metadata
    unit = "texts" if args.pooling in ("max", "mean", "last") else "tokens"
    print(
        f"probe at layer {best} ({args.hook}, {args.pooling} pooling): held-out accuracy "
        f"{m['accuracy']:.4f}, ROC AUC {m['auc']:.4f} (n_train {m['n_train']}, n_test {m['n_test']} {unit})"
    )
    if defaulted:
        print("defaults: " + ", ".join(f"{k}={getattr(args, k)}" for k in defaulted))
    if "token_eval" in m:
        ev = m["token_eval"]
        fire = ", ".join(
            f"{t:g}: {a:.3f}/{r:.3f}"
            for t, a, r in zip(ev["thresholds"], ev["token_fire_rate_nontoxic_texts"], ev["text_recall"])
        )
        print(f"per token, threshold: share of non-toxic texts' tokens firing / toxic texts caught: {fire}")
    if not probe.is_monitor:
        print(f"note: not a generation monitor: {probe.monitor_refusal()}")
    written = "probe.safetensors, probe.json" + (", layers.csv" if args.all_layers else "")
    print(f"wrote {out}/{written}")
    return 0
