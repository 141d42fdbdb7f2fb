#!/usr/bin/env python
"""Build the evaluation inputs from the Davidson et al. (2017) tweet CSV.

    python scripts/make_eval_data.py [--csv FILE] [--out DIR] [--n-prompts 100] [--n-neutral 200] [--seed 0]

Writes into ``--out`` (default ``runs/eval-data``; created atomically, an existing non-empty directory
is refused unless ``--overwrite``):

* ``prompts.jsonl`` — ``{"prompt": ...}`` per line: prefixes of *offensive* (class 1) tweets. Each tweet
  is cleaned (:func:`clean_tweet`); tweets with fewer than ``--min-words`` words after cleaning are
  dropped; the prompt is the first ``clamp(n_words // 2, --min-prompt-words, --max-prompt-words)`` words;
  duplicate prompts are kept once (first occurrence in file order); a seeded shuffle
  (``random.Random(seed)``) picks ``--n-prompts`` of them.
* ``neutral.txt`` — ``--n-neutral`` cleaned *neither* (class 2) tweets with at least
  ``--neutral-min-words`` words, deduplicated, one per line, picked the same way (for perplexity).
* ``manifest.json`` — source path, sha256 of the CSV, counts, seed, arguments and cleaning rules.
* ``probe_train.csv`` — ``tweet,class`` for every other row (cleaned tweet; rows used as neutral
  texts or whose cleaned tweet starts with an evaluation prompt are left out), so a probe trained on it
  never sees evaluation text.

If the CSV is missing the script prints one line and exits with status 2 (so do other input errors).
The functions are importable (``clean_tweet``, ``make_prompts``, ``make_neutral``, ``probe_rows``).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import html
import json
import random
import re
import sys
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from lens.errors import ToxlensError, exit_status  # noqa: E402
from lens.io import atomic_directory  # noqa: E402
from lens.textfiles import read_csv_rows  # noqa: E402

DEFAULT_CSV = ROOT.parent / "shared" / "data" / "davidson" / "labeled_data.csv"
OFFENSIVE, NEITHER = "1", "2"

_NUMERIC_ENTITY = re.compile(r"&#(?:[xX][0-9a-fA-F]+|[0-9]+);?")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_RETWEET = re.compile(r"\bRT\s+@\w+:?")
_MENTION = re.compile(r"@\w+:?")
_LEADING = re.compile(r"^(?:\s*(?:!+|RT\b:?|:))+\s*")
_SPACE = re.compile(r"\s+")

CLEANING_RULES = [
    "numeric character references (&#NNN; / &#xHH;, ';' optional): decoded when the character is a letter, "
    "digit or punctuation (Unicode category L*, N*, P*), else (emoji, symbols, surrogates) removed",
    "html.unescape (&amp; &lt; &gt; &quot; ...)",
    "numeric character references produced by the unescaping: same rule again",
    "remove URLs (http://, https://, www. up to the next whitespace)",
    "remove 'RT @user:' retweet markers anywhere",
    "remove @mentions (with a trailing ':')",
    "collapse all whitespace (newlines included) to single spaces, strip both ends",
    "strip leading runs of '!', leading 'RT' / 'RT:' tokens and leading ':' (repeatedly)",
]


def _entity(match: re.Match[str]) -> str:
    body = match.group(0)[2:].rstrip(";")
    try:
        char = chr(int(body[1:], 16) if body[:1] in "xX" else int(body))
    except (ValueError, OverflowError):
        return " "
    return char if unicodedata.category(char)[0] in "LNP" else " "


def clean_tweet(text: str) -> str:
    """Apply :data:`CLEANING_RULES` in order; the result has no newlines and may be empty."""
    text = _NUMERIC_ENTITY.sub(_entity, text)
    text = _NUMERIC_ENTITY.sub(_entity, html.unescape(text))
    text = _URL.sub(" ", text)
    text = _RETWEET.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = _SPACE.sub(" ", text).strip()
    return _LEADING.sub("", text).strip()


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """Rows of the CSV (header ``tweet``, ``class`` required)."""
    p = Path(path)
    rows = read_csv_rows(p, "data file")  # BOM, encoding and unterminated quotes: one clear error
    header = list(rows[0]) if rows else []
    missing = {"tweet", "class"} - set(header)
    if missing:
        raise ToxlensError(f"{p}:1: missing column(s) {sorted(missing)}; header has {header}")
    return rows


def _eligible(rows: Iterable[Mapping[str, Any]], label: str, min_words: int) -> list[list[str]]:
    """Cleaned word lists of the rows of class ``label`` with at least ``min_words`` words."""
    out = []
    for row in rows:
        if str(row["class"]).strip() != label:
            continue
        words = clean_tweet(str(row["tweet"])).split()
        if len(words) >= min_words:
            out.append(words)
    return out


def _pick(items: Sequence[str], n: int, seed: int, what: str) -> list[str]:
    unique = list(dict.fromkeys(items))
    if n < 1 or len(unique) < n:
        raise ToxlensError(
            f"asked for {n} {what}, but {len(unique)} distinct eligible ones exist (need n >= 1)"
        )
    random.Random(seed).shuffle(unique)
    return unique[:n]


def make_prompts(
    rows: Iterable[Mapping[str, Any]],
    n: int = 100,
    seed: int = 0,
    min_words: int = 8,
    min_prompt_words: int = 4,
    max_prompt_words: int = 12,
    label: str = OFFENSIVE,
) -> list[str]:
    """``n`` prompts: the first ``clamp(len(words) // 2, min_prompt_words, max_prompt_words)`` words of
    cleaned class-``label`` tweets with at least ``min_words`` words (deduplicated, seeded shuffle)."""
    if not (1 <= min_prompt_words <= max_prompt_words and min_prompt_words < min_words):
        raise ToxlensError(
            "expected 1 <= min_prompt_words <= max_prompt_words and min_prompt_words < min_words (a prompt "
            f"never takes a whole tweet), got {min_prompt_words}, {max_prompt_words}, {min_words}"
        )
    prompts = []
    for words in _eligible(rows, label, min_words):
        k = min(max(len(words) // 2, min_prompt_words), max_prompt_words)
        prompts.append(" ".join(words[:k]))
    return _pick(prompts, n, seed, "prompts")


def make_neutral(
    rows: Iterable[Mapping[str, Any]],
    n: int = 200,
    seed: int = 0,
    min_words: int = 5,
    label: str = NEITHER,
) -> list[str]:
    """``n`` cleaned class-``label`` tweets with at least ``min_words`` words (deduplicated, seeded shuffle)."""
    return _pick([" ".join(w) for w in _eligible(rows, label, min_words)], n, seed, "neutral texts")


def probe_rows(
    rows: Iterable[Mapping[str, Any]], prompts: Sequence[str], neutral: Sequence[str]
) -> list[tuple[str, str]]:
    """(cleaned tweet, class) of every row not used for evaluation: not a neutral text, not starting
    with a prompt, non-empty after cleaning."""
    used_neutral = set(neutral)
    starts = tuple(prompts)
    out = []
    for row in rows:
        text = clean_tweet(str(row["tweet"]))
        if text and text not in used_neutral and not text.startswith(starts):
            out.append((text, str(row["class"]).strip()))
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def build(args: argparse.Namespace) -> Path:
    csv_path = Path(args.csv)
    rows = read_rows(csv_path)
    prompts = make_prompts(
        rows, args.n_prompts, args.seed, args.min_words, args.min_prompt_words, args.max_prompt_words
    )
    neutral = make_neutral(rows, args.n_neutral, args.seed, args.neutral_min_words)
    train_rows = probe_rows(rows, prompts, neutral)
    manifest = {
        "source": str(csv_path.resolve()),
        "source_sha256": sha256(csv_path),
        "source_rows": len(rows),
        "source_class_counts": dict(sorted(Counter(str(r["class"]).strip() for r in rows).items())),
        "n_prompts": len(prompts),
        "n_neutral": len(neutral),
        "n_probe_train": len(train_rows),
        "probe_train_rule": "every row whose cleaned tweet is non-empty, is not a neutral text and does not "
        "start with an evaluation prompt (so the probe never sees evaluation text); columns tweet (cleaned), class",
        "eligible_prompts": len(_eligible(rows, OFFENSIVE, args.min_words)),
        "eligible_neutral": len(_eligible(rows, NEITHER, args.neutral_min_words)),
        "seed": args.seed,
        "prompt_class": OFFENSIVE,
        "neutral_class": NEITHER,
        "min_words": args.min_words,
        "min_prompt_words": args.min_prompt_words,
        "max_prompt_words": args.max_prompt_words,
        "neutral_min_words": args.neutral_min_words,
        "prompt_rule": "first clamp(n_words // 2, min_prompt_words, max_prompt_words) words",
        "selection": "deduplicate (first occurrence), random.Random(seed).shuffle, take the first n",
        "cleaning_rules": CLEANING_RULES,
    }
    with atomic_directory(args.out, overwrite=args.overwrite) as staging:
        with (staging / "prompts.jsonl").open("w", encoding="utf-8") as f:
            f.writelines(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in prompts)
        (staging / "neutral.txt").write_text("".join(t + "\n" for t in neutral), encoding="utf-8")
        with (staging / "probe_train.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["tweet", "class"])
            writer.writerows(train_rows)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return Path(args.out)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument(
        "--csv", default=str(DEFAULT_CSV), help="Davidson labeled_data.csv (default: %(default)s)"
    )
    ap.add_argument("--out", default="runs/eval-data", help="output directory (default: %(default)s)")
    ap.add_argument("--n-prompts", type=int, default=100)
    ap.add_argument("--n-neutral", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-words", type=int, default=8, help="minimum words of a prompt's source tweet")
    ap.add_argument("--min-prompt-words", type=int, default=4)
    ap.add_argument("--max-prompt-words", type=int, default=12)
    ap.add_argument("--neutral-min-words", type=int, default=5)
    ap.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --out")
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def run() -> int:
        if not Path(args.csv).is_file():
            raise ToxlensError(f"CSV {args.csv!r} not found (pass --csv FILE)")
        out = build(args)
        print(f"wrote {out}/prompts.jsonl, neutral.txt, probe_train.csv, manifest.json")
        return 0

    return exit_status("make_eval_data", run)


if __name__ == "__main__":
    sys.exit(main())
