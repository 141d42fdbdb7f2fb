"""The toxic token set behind the default metric.

Words come from a file (one per line, ``#`` comments allowed) or, by default, from the model that the
maintained PyPI package ``alt-profanity-check`` ships: every purely alphabetic unigram of its
vectorizer's vocabulary that its classifier scores ≥ ``DEFAULT_MIN_PROB`` on its own. No list of
slurs is typed into this source.

Each word is tried in four surface forms — ``w``, ``" w"``, ``W`` (capitalised) and ``" W"`` — since
BPE tokenizers give the leading-space variant its own id. A form is kept when the tokenizer encodes
it as exactly one token. Words none of whose forms is a single token are handled by ``multi_token``:
``"skip"`` (default) leaves them out and lists them in ``skipped``; ``"first"`` keeps the first token
of the space-prefixed lower-case form (broader, noisier: that token is often a generic prefix).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from lens.errors import ToxlensError

DEFAULT_MIN_PROB = 0.9
MULTI_TOKEN_MODES = ("skip", "first")


@dataclass
class ToxicTokenSet:
    ids: list[int]
    token_to_words: dict[int, list[str]]
    skipped: list[str]
    source: str
    multi_token: str
    n_words: int = 0
    forms: list[str] = field(default_factory=lambda: ["w", " w", "W", " W"])

    def tensor(self, device: torch.device | str = "cpu") -> Int[Tensor, "n_tokens"]:
        return torch.tensor(self.ids, dtype=torch.long, device=device)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "n_words": self.n_words,
            "n_tokens": len(self.ids),
            "multi_token": self.multi_token,
            "forms": self.forms,
            "n_skipped_words": len(self.skipped),
        }


@functools.lru_cache(maxsize=1)
def default_words(min_prob: float = DEFAULT_MIN_PROB) -> tuple[str, ...]:
    """Unigrams of alt-profanity-check's shipped vocabulary that its model scores ≥ ``min_prob``.

    The list is kept under ``$TOXLENS_CACHE/words/`` keyed by ``min_prob`` and the versions of
    alt-profanity-check and scikit-learn (whose pickled model scores the vocabulary), so later runs skip
    importing and running the classifier (~1 s); ``TOXLENS_CACHE=off`` or an unwritable cache only costs
    that time."""
    key = _words_key(min_prob)
    path = _words_cache_path(key)
    cached = _read_words_cache(path, key)
    if cached is not None:
        return cached
    words = _score_vocabulary(min_prob)
    if path is not None:
        _write_words_cache(path, key, words)
    return words


def _score_vocabulary(min_prob: float) -> tuple[str, ...]:
    try:
        from profanity_check import predict_prob
        from profanity_check.profanity_check import vectorizer
    except ImportError as err:  # pragma: no cover - dependency of the package
        raise ToxlensError(
            "the default toxic word list needs alt-profanity-check: pip install alt-profanity-check"
        ) from err
    vocab = sorted(w for w in vectorizer.vocabulary_ if w.isalpha() and w.isascii())
    probs = predict_prob(vocab)
    return tuple(w for w, p in zip(vocab, probs) if p >= min_prob)


def _words_key(min_prob: float) -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    return {
        "min_prob": float(min_prob),
        "alt-profanity-check": ver("alt-profanity-check"),
        "scikit-learn": ver("scikit-learn"),
    }


def _words_cache_path(key: dict[str, Any]) -> Path | None:
    import hashlib
    import json

    from lens.io import cache_root

    root = cache_root()
    if root is None or key["alt-profanity-check"] is None:
        return None
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return root / "words" / f"profanity-{digest}.json"


def _read_words_cache(path: Path | None, key: dict[str, Any]) -> tuple[str, ...] | None:
    import json

    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key:
        return None
    words = data.get("words")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        return None
    return tuple(words)


def _write_words_cache(path: Path, key: dict[str, Any], words: tuple[str, ...]) -> None:
    import json

    from lens.io import atomic_file

    text = json.dumps({"key": key, "words": list(words)})
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_file(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    except OSError:
        pass


def read_words(path: str | Path) -> list[str]:
    from lens.textfiles import read_lines

    p = Path(path)
    words = []
    for line in read_lines(p, "toxic word file"):
        w = line.split("#", 1)[0].strip()
        if w:
            words.append(w)
    if not words:
        raise ToxlensError(f"toxic word file {str(p)!r} contains no words")
    return words


def toxic_token_set(
    tokenizer: Any, words_file: str | Path | None = None, multi_token: str = "skip"
) -> ToxicTokenSet:
    """Map a word list to single-token ids of ``tokenizer`` (see module docstring)."""
    if multi_token not in MULTI_TOKEN_MODES:
        raise ToxlensError(f"multi_token must be one of {MULTI_TOKEN_MODES}, got {multi_token!r}")
    if words_file is None:
        words = list(default_words())
        source = f"alt-profanity-check vocabulary, single-word probability >= {DEFAULT_MIN_PROB}"
    else:
        words = read_words(words_file)
        source = str(words_file)
    token_to_words: dict[int, list[str]] = {}
    skipped: list[str] = []
    special = set(tokenizer.all_special_ids)  # an unknown word must not map to <unk>
    for word in words:
        found = False
        for form in (word, " " + word, word.capitalize(), " " + word.capitalize()):
            ids = tokenizer.encode(form, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in special:
                words_for = token_to_words.setdefault(ids[0], [])
                if word not in words_for:
                    words_for.append(word)
                found = True
        if not found:
            if multi_token == "first":
                ids = tokenizer.encode(" " + word, add_special_tokens=False)
                if ids and ids[0] not in special:
                    token_to_words.setdefault(ids[0], []).append(word)
                    continue
            skipped.append(word)
    if not token_to_words:
        raise ToxlensError(
            f"none of the {len(words)} toxic words ({source}) is a single token for this tokenizer"
        )
    ids = sorted(token_to_words)
    return ToxicTokenSet(ids, token_to_words, skipped, source, multi_token, n_words=len(words))
