"""``toxlens locate``: rank every attention head and MLP by its toxic effect (see README)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens.common import model_args, token_args


def add_parser(sub: Any) -> None:
    loc = sub.add_parser("locate", help="rank every attention head and MLP by its toxic effect")
    model_args(loc)
    loc.add_argument(
        "--pairs", default=None, help='JSONL contrast pairs: {"toxic": ..., "benign": ...} (or --texts)'
    )
    token_args(loc)
    loc.add_argument("--method", default="both", choices=["attribution", "activation", "both"])
    loc.add_argument(
        "--metric",
        default="toxic-mass",
        choices=["toxic-mass", "logit-diff"],
        help="toxic-mass (default): log probability mass on the toxic token set at the last "
        "position; logit-diff: per-pair toxic_target vs benign_target",
    )
    loc.add_argument("--top-k", type=int, default=10)
    loc.add_argument("--prepend-bos", action="store_true", help="put the BOS token in front of every prompt")
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
    if args.texts is not None:
        from toxlens.cli_locate_texts import run_texts

        return run_texts(args)
    from lens.io import atomic_directory, check_output_dir, json_safe
    from lens.loading import check_model_spec, load_model, resolve_device
    from lens.metrics import ToxicLogMass, logit_diff_from_pairs
    from lens.prompts import check_pair_lines, load_pairs, read_pair_lines
    from lens.tokens import read_words, toxic_token_set
    from patching.locate import locate, summary, write_locate

    if args.top_k < 1:
        raise ToxlensError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
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
    inputs = [args.pairs, args.toxic_words, args.model]
    check_output_dir(Path(args.out), args.overwrite, inputs)
    check_model_spec(args.model)
    resolve_device(args.device)
    timings: dict[str, float] = {}
    t_all = t0 = time.perf_counter()
    model = load_model(args.model, args.device, args.dtype)
    timings["load_model_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    pairs = load_pairs(args.pairs, model, prepend_bos=args.prepend_bos)
    if args.metric == "logit-diff":
        metric: Any = logit_diff_from_pairs(pairs, model.tokenizer)
    else:
        tokens = toxic_token_set(model.tokenizer, args.toxic_words, args.multi_token)
        metric = ToxicLogMass(tokens.ids, tokens.to_dict())
    timings["prepare_inputs_s"] = time.perf_counter() - t0
    result = locate(model, pairs, metric, args.method, args.batch_size, progress=not args.no_progress)
    timings.update(result.timings)
    table, positions = result.table(), None
    if args.positions:
        from patching.position_scores import position_scores, rerank

        t0 = time.perf_counter()
        positions, _ = position_scores(
            model, pairs, metric, result.activation, args.batch_size, progress=not args.no_progress
        )
        table = rerank(table, positions, args.rank_by)
        timings["positions_s"] = time.perf_counter() - t0
    with atomic_directory(args.out, args.overwrite, inputs) as stage:
        t0 = time.perf_counter()
        write_locate(result, stage, {})
        if positions is not None:
            from patching.position_scores import write_positions

            write_positions(stage, positions, table)
        from figures.render import render

        render(stage, stage / "figures")
        timings["write_outputs_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_all
        info = summary(result, model, pairs, metric, args.top_k, timings)
        info["rank_by"] = args.rank_by
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
    label = label or ("activation" if result.activation else "attribution") + " score"
    print(f"top {args.top_k} components ({label}):")
    print(top.to_string(index=False))
    if info["pearson_r_heads"] is not None and info["pearson_r_all"] is not None:
        print(
            f"attribution vs activation Pearson r: heads {info['pearson_r_heads']:.3f}, "
            f"all components {info['pearson_r_all']:.3f}"
        )
    print(f"wrote {args.out}/components.csv, result.json, figures/")
    return 0
