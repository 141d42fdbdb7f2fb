"""``toxlens locate``: rank every attention head and MLP by its toxic effect (see README)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import (
    check_device_map_args,
    check_pair_metric_inputs,
    device_map_args,
    load_from_args,
    model_args,
    pair_metric,
    pair_metric_args,
)


def add_parser(sub: Any) -> None:
    loc = sub.add_parser("locate", help="rank every attention head and MLP by its toxic effect")
    model_args(loc)
    device_map_args(loc)
    loc.add_argument(
        "--pairs", default=None, help='JSONL contrast pairs: {"toxic": ..., "benign": ...} (or --texts)'
    )
    pair_metric_args(loc)
    loc.add_argument(
        "--method",
        default="both",
        help="comma-separated methods among activation, attribution, relp, ig (aliases: both = "
        "activation,attribution; all). Ranks come from activation when it runs, else the first method",
    )
    loc.add_argument("--ig-steps", type=int, default=5, help="integrated gradients: interpolation steps m")
    loc.add_argument(
        "--ig-mode",
        default="inputs",
        choices=["inputs", "activations"],
        help="integrated gradients: interpolate the embeddings (default) or each hook site's activation",
    )
    loc.add_argument(
        "--relp-ah-rule", action="store_true", help="RelP: also detach the attention patterns (AH-rule)"
    )
    loc.add_argument("--top-k", type=int, default=10)
    loc.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="rows per patched forward (speed only; default 1024 with --pairs, 64 texts with --texts)",
    )
    loc.add_argument(
        "--positions",
        action="store_true",
        help="also split each component's activation score by position class (diff, after, final): "
        "components_by_position.csv",
    )
    loc.add_argument(
        "--rank-by",
        default="all",
        choices=["all", "diff", "after", "final"],
        help="which activation score ranks components.csv (diff/after/final need --positions)",
    )
    loc.add_argument("--out", required=True, help="output directory (written atomically)")
    loc.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    loc.add_argument("--no-progress", action="store_true")
    from toxlens.workers_args import worker_args

    worker_args(loc)
    from toxlens.cli_locate_texts import add_text_args

    add_text_args(loc)


def run(args: argparse.Namespace) -> int:
    if (args.pairs is None) == (args.texts is None):
        raise ToxlensError(
            "locate needs exactly one of --pairs FILE (contrast pairs) or --texts FILE (labelled texts)"
        )
    if args.batch_size is None:
        args.batch_size = 1024 if args.pairs is not None else 64
    if args.texts is not None and (args.positions or args.rank_by != "all"):
        raise ToxlensError("--positions and --rank-by need --pairs (contrast pairs), not --texts")
    if args.rank_by != "all" and not args.positions:
        raise ToxlensError(f"--rank-by {args.rank_by} needs --positions (the position-class scores)")
    from toxlens.workers_args import check_worker_args

    check_worker_args(args)
    if args.texts is not None:
        from toxlens.cli_locate_texts import run_texts

        return run_texts(args)
    from lens.io import atomic_directory, check_output_dir, json_safe
    from lens.loading import check_model_spec, resolve_device
    from lens.prompts import load_pairs
    from patching.locate import locate, summary, write_locate
    from patching.methods import parse_methods

    methods = parse_methods(args.method)
    if args.positions and "activation" not in methods:
        raise ToxlensError(
            f"--positions splits activation-patching scores, but --method {args.method!r} does not run activation"
        )
    if args.ig_steps < 1:
        raise ToxlensError(f"--ig-steps must be >= 1, got {args.ig_steps}")
    if args.top_k < 1:
        raise ToxlensError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_pair_metric_inputs(args)
    inputs = [args.pairs, args.toxic_words, args.model]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    check_model_spec(args.model)
    resolve_device(args.device)
    check_device_map_args(args)
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    model = load_from_args(args)
    timings["load_model_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = load_pairs(args.pairs, model, prepend_bos=args.prepend_bos)
    metric = pair_metric(args, model, pairs)
    timings["prepare_inputs_s"] = time.perf_counter() - t0
    settings = {"ig_steps": args.ig_steps, "ig_mode": args.ig_mode, "relp_ah_rule": args.relp_ah_rule}
    workers: dict[str, Any] | None = None
    by_class = None
    from toxlens.workers_args import use_ray

    if use_ray(args):
        from toxlens.locate_sharded import sharded_locate

        result, by_class, workers = sharded_locate(
            args, model, pairs, metric, methods, settings, args.positions
        )
    else:
        result = locate(
            model, pairs, metric, ",".join(methods), args.batch_size, not args.no_progress, settings
        )
    timings.update(result.timings)
    table, positions = result.table(), None
    if by_class is not None and result.activation is not None:
        from patching.position_scores import position_table, rerank

        positions = position_table(by_class, result.activation)
        table = rerank(table, positions, args.rank_by)
        timings["positions_s"] = float((workers or {}).get("positions_s", 0.0))
    elif args.positions:
        from patching.position_scores import position_scores, rerank

        t0 = time.perf_counter()
        positions, _ = position_scores(
            model, pairs, metric, result.activation, args.batch_size, progress=not args.no_progress
        )
        table = rerank(table, positions, args.rank_by)
        timings["positions_s"] = time.perf_counter() - t0
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        t0 = time.perf_counter()
        write_locate(result, stage, {}, table)
        if positions is not None:
            from patching.position_scores import write_positions

            write_positions(stage, positions)
        from figures.render import render

        render(stage, stage / "figures")
        timings["write_outputs_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_all
        info = summary(result, model, pairs, metric, args.top_k, timings)
        info["rank_by"] = args.rank_by
        if workers is not None:
            info["workers"] = workers
        if positions is not None:
            from patching.position_scores import CLASSES_DEFINITION

            info["definitions"]["position_classes"] = CLASSES_DEFINITION
            top_rows = table.head(args.top_k).astype(object)
            info["top_k"] = top_rows.where(top_rows.notna(), None).to_dict("records")
        (stage / "result.json").write_text(
            json.dumps(json_safe(info), indent=2, default=str, allow_nan=False)
        )
    top = table.head(args.top_k)
    label = f"activation score, {args.rank_by} positions" if positions is not None else None
    label = label or f"{result.primary_method} score"
    print(f"top {args.top_k} components ({label}):")
    print(top.to_string(index=False))
    for method, stats in info["agreement_with_activation"].items():
        parts = [
            f"{label} {stats[label]['pearson']:.3f}"
            for label in ("heads", "mlps", "all")
            if stats[label]["pearson"] is not None
        ]
        cost = stats["cost"]["forward_equivalents"]
        tail = f"; cost {cost:.1f} forward passes" if cost is not None else ""
        print(f"{method} vs activation Pearson r: {', '.join(parts)}{tail}")
    print(f"wrote {args.out}/components.csv, result.json, figures/")
    return 0
