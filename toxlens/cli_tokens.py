"""``toxlens tokens``: print the toxic token set the metric uses."""

from __future__ import annotations

import argparse
import json
from typing import Any

from toxlens.common import model_args, token_args


def add_parser(sub: Any) -> None:
    tok = sub.add_parser("tokens", help="print the toxic token set the metric uses")
    model_args(tok)
    token_args(tok)
    tok.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from lens.loading import check_model_spec, load_model, resolve_device
    from lens.tokens import read_words, toxic_token_set

    if args.toxic_words is not None:
        read_words(args.toxic_words)
    check_model_spec(args.model)
    resolve_device(args.device)
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
