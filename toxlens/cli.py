"""Command-line interface: ``toxlens locate``, ``tokens``, ``probe train`` and ``generate``.

A subcommand living in its own module (``toxlens/cli_*.py``) exposes ``add_parser(sub)`` and
``run(args) -> int``; it is wired in by adding the module to :data:`SUBCOMMANDS`.

Every failure the user can cause is a ToxlensError: printed as one line, exit status 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lens.errors import ToxlensError
from toxlens import cli_evaluate, cli_generate, cli_probe

# command name -> module with add_parser(sub) and run(args) -> int
SUBCOMMANDS: dict[str, Any] = {"probe": cli_probe, "generate": cli_generate, "evaluate": cli_evaluate}


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default="gpt2",
        help="HF/TransformerLens name, local HF directory, .gguf file, or smollm2-135m (default: gpt2)",
    )
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])


def _token_args(p: argparse.ArgumentParser) -> None:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toxlens", description="Locate and act on toxicity circuits.")
    sub = parser.add_subparsers(dest="command", required=True)

    loc = sub.add_parser("locate", help="rank every attention head and MLP by its toxic effect")
    _model_args(loc)
    loc.add_argument("--pairs", required=True, help='JSONL contrast pairs: {"toxic": ..., "benign": ...}')
    _token_args(loc)
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
    loc.add_argument("--batch-size", type=int, default=64, help="rows per patched forward (speed only)")
    loc.add_argument("--out", required=True, help="output directory (written atomically)")
    loc.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    loc.add_argument("--no-progress", action="store_true")

    tok = sub.add_parser("tokens", help="print the toxic token set the metric uses")
    _model_args(tok)
    _token_args(tok)
    tok.add_argument("--json", action="store_true", help="print JSON instead of a table")
    for module in SUBCOMMANDS.values():
        module.add_parser(sub)
    return parser


def cmd_locate(args: argparse.Namespace) -> int:
    from lens.io import atomic_directory, check_output_dir
    from lens.loading import load_model
    from lens.metrics import ToxicLogMass, logit_diff_from_pairs
    from lens.prompts import load_pairs
    from lens.tokens import read_words, toxic_token_set
    from patching.locate import locate, summary, write_locate

    if args.top_k < 1:
        raise ToxlensError(f"--top-k must be >= 1, got {args.top_k}")
    if args.batch_size < 1:
        raise ToxlensError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not Path(args.pairs).is_file():
        raise ToxlensError(f"pairs file {args.pairs!r} does not exist")
    if args.toxic_words is not None:
        read_words(args.toxic_words)
    check_output_dir(Path(args.out), args.overwrite)
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
    with atomic_directory(args.out, args.overwrite) as stage:
        t0 = time.perf_counter()
        write_locate(result, stage, {})
        from figures.render import render

        render(stage, stage / "figures")
        timings["write_outputs_s"] = time.perf_counter() - t0
        timings["total_s"] = time.perf_counter() - t_all
        info = summary(result, model, pairs, metric, args.top_k, timings)
        (stage / "result.json").write_text(json.dumps(info, indent=2, default=str))
    top = result.top_k(args.top_k)
    print(f"top {args.top_k} components ({'activation' if result.activation else 'attribution'} score):")
    print(top.to_string(index=False))
    if info["pearson_r_heads"] is not None:
        print(
            f"attribution vs activation Pearson r: heads {info['pearson_r_heads']:.3f}, "
            f"all components {info['pearson_r_all']:.3f}"
        )
    print(f"wrote {args.out}/components.csv, result.json, figures/")
    return 0


def cmd_tokens(args: argparse.Namespace) -> int:
    from lens.loading import load_model
    from lens.tokens import toxic_token_set

    if args.toxic_words is not None and not Path(args.toxic_words).is_file():
        raise ToxlensError(f"toxic word file {args.toxic_words!r} does not exist")
    model = load_model(args.model, args.device, args.dtype)
    tokens = toxic_token_set(model.tokenizer, args.toxic_words, args.multi_token)
    rows = [
        {
            "id": i,
            "token": model.tokenizer.convert_ids_to_tokens(i),
            "text": model.tokenizer.decode([i]),
            "words": tokens.token_to_words[i],
        }
        for i in tokens.ids
    ]
    if args.json:
        print(json.dumps({**tokens.to_dict(), "tokens": rows, "skipped_words": tokens.skipped}, indent=2))
        return 0
    print(
        f"# toxic token set for {args.model}: {len(rows)} tokens from {tokens.n_words} words "
        f"({tokens.source}); multi-token words: {tokens.multi_token} ({len(tokens.skipped)} skipped)"
    )
    print(f"{'id':>8}  {'text':<20} words")
    for r in rows:
        print(f"{r['id']:>8}  {r['text']!r:<20} {', '.join(r['words'])}")
    return 0


def commands() -> dict[str, Callable[[argparse.Namespace], int]]:
    """Command name -> the function that runs it."""
    return {
        "locate": cmd_locate,
        "tokens": cmd_tokens,
        **{name: module.run for name, module in SUBCOMMANDS.items()},
    }


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run = commands().get(args.command)
        if run is None:
            raise ToxlensError(f"unknown command {args.command!r}")
        return int(run(args))
    except ToxlensError as err:
        print(f"toxlens: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("toxlens: interrupted; nothing was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
