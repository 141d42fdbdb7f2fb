"""CI mode of the notebooks (``TOXLENS_NOTEBOOK_TINY=1``): a tiny offline stand-in for the real model.

:func:`setup` returns what the notebooks' model cell otherwise gets from ``load_model`` and the
shipped files: a tiny seeded Llama (``tests/tiny.py``, 3 layers, 6 query heads, grouped-query
attention) with its word-level tokenizer, a JSONL file of contrast pairs written in that tokenizer's
vocabulary (several token lengths, so length grouping is exercised) and a word file naming the tiny
vocabulary's two "toxic" marker words. Nothing is downloaded; nothing offensive is needed.

Notebooks import this module only in CI mode; ``tests/tiny.py`` is imported by path, so the
``tests`` folder need not be a package.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (template, toxic word, benign word): the toxic and benign prompts differ only in the filled-in word,
# so each pair tokenizes to one length. Every word is in tests/tiny.py's WORDS.
TEMPLATES = (
    "you are {w}",
    "you are a {w}",
    "you are a {w} and",
    "my {w} is so very",
    "it was a {w} and",
    "he is a red {w} and",
    "she is my very {w} and you",
)
WORD_PAIRS = (("idiot", "friend"), ("jerk", "pal"))


def _load_tiny() -> ModuleType:
    if str(ROOT) not in sys.path:  # tests/tiny.py imports lens.loading
        sys.path.insert(0, str(ROOT))
    spec = importlib.util.spec_from_file_location("_toxlens_tests_tiny", ROOT / "tests" / "tiny.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {ROOT / 'tests' / 'tiny.py'}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pair_lines() -> list[str]:
    """JSONL lines of the tiny contrast set: lengths 3 to 7 tokens, the 5-token group the largest."""
    return [
        json.dumps({"toxic": template.format(w=toxic), "benign": template.format(w=benign)})
        for template in TEMPLATES
        for toxic, benign in WORD_PAIRS
    ]


def setup(directory: str | Path | None = None, seed: int = 0, n_layers: int = 3) -> tuple[Any, Path, Path]:
    """``(model, pairs_file, words_file)`` for CI mode, files written under ``directory`` (default: a
    fresh temporary directory)."""
    import torch

    torch.set_num_threads(1)  # tiny matrices: one thread is fastest and steadiest on a shared CPU
    tiny = _load_tiny()
    out = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="toxlens-tiny-"))
    out.mkdir(parents=True, exist_ok=True)
    model, _reference = tiny.tiny("llama", out / "model", seed=seed, n_layers=n_layers)
    pairs_file = out / "pairs.jsonl"
    pairs_file.write_text("\n".join(pair_lines()) + "\n", encoding="utf-8")
    words_file = out / "toxic_words.txt"
    words_file.write_text("# tiny test vocabulary's marker words\n" + "\n".join(tiny.TOXIC_WORDS) + "\n")
    return model, pairs_file, words_file


def probe_texts(
    n: int = 240, seed: int = 0, min_words: int = 3, max_words: int = 8, marker_last: bool = False
) -> tuple[list[str], list[int]]:
    """``(texts, labels)``: synthetic labelled texts in the tiny vocabulary, for training a probe in CI mode.

    Each text is ``min_words`` to ``max_words`` random neutral words with one marker word put at a random
    place (at the end with ``marker_last``): a toxic marker (``tests/tiny.py``'s ``TOXIC_WORDS``) for
    label 1, a benign one (``BENIGN_WORDS``) for label 0, alternately, so the label is exactly "a toxic
    marker is present". Seeded; nothing offensive is needed.
    """
    import random

    tiny = _load_tiny()
    markers = set(tiny.TOXIC_WORDS) | set(tiny.BENIGN_WORDS)
    neutral = [w for w in tiny.WORDS if w not in markers]
    rng = random.Random(seed)
    texts: list[str] = []
    labels: list[int] = []
    for i in range(n):
        label = i % 2
        words = rng.choices(neutral, k=rng.randint(min_words, max_words) - 1)
        where = len(words) if marker_last else rng.randint(0, len(words))
        words.insert(where, rng.choice(tiny.TOXIC_WORDS if label else tiny.BENIGN_WORDS))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels
