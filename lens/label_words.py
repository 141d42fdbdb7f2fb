"""Toxic words from human text labels, not from a scorer: the scorer-independent alternative to the default
word list of :mod:`lens.tokens` (which comes from the default scorer's vocabulary).

A word is a lower-cased run of letters (``[a-z]+``, apostrophes dropped) of at least ``min_len`` letters.
Each text counts a word once (document frequency). For every word the weighted log-odds ratio of appearing
in a toxic rather than a non-toxic text, with a uniform Dirichlet prior ``alpha`` (Monroe, Colaresi & Quinn
2008, "Fightin' words")::

    delta(w) = log((t_w + a) / (T − t_w + a)) − log((n_w + a) / (N − n_w + a))
    z(w)     = delta(w) / sqrt(1 / (t_w + a) + 1 / (n_w + a))

with ``t_w`` / ``n_w`` the toxic / non-toxic texts containing ``w`` and ``T`` / ``N`` the texts of each
class. Words in at least ``min_count`` texts whose log-odds ratio is at least ``min_log_odds`` (default 2: at
least e² ≈ 7.4 times the odds of appearing in a toxic text; without it, words that are merely commoner in one
class's register, such as pronouns, rank high on a large corpus) are ranked by ``z``; the ``top`` highest are
returned. The labels are the caller's (the data's human labels); no scorer is used.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lens.errors import ToxlensError

WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class LabelWord:
    word: str
    z: float
    log_odds: float
    toxic_texts: int
    nontoxic_texts: int


def words_of(text: str, min_len: int) -> set[str]:
    """The distinct words of ``text`` (module docstring)."""
    return {w for w in WORD.findall(text.lower().replace("'", "")) if len(w) >= min_len}


def label_words(
    texts: Sequence[str],
    labels: Sequence[int],
    top: int = 100,
    min_count: int = 10,
    min_len: int = 3,
    alpha: float = 0.5,
    min_log_odds: float = 2.0,
) -> list[LabelWord]:
    """The ``top`` words most associated with label 1 (module docstring), best first."""
    if len(texts) != len(labels):
        raise ToxlensError(f"got {len(texts)} texts but {len(labels)} labels; expected one label per text")
    bad = sorted({v for v in labels if v not in (0, 1)})
    if bad:
        raise ToxlensError(f"labels must be 0 or 1, got {bad[:5]}")
    n_tox = sum(labels)
    n_non = len(labels) - n_tox
    if n_tox == 0 or n_non == 0:
        raise ToxlensError(
            f"label_words needs texts of both classes, got {n_tox} toxic and {n_non} non-toxic texts"
        )
    for name, value, low in (("top", top, 1), ("min_count", min_count, 1), ("min_len", min_len, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ToxlensError(f"{name} must be an int >= {low}, got {value!r}")
    if not (isinstance(alpha, int | float) and math.isfinite(alpha) and alpha > 0):
        raise ToxlensError(f"alpha must be a finite number > 0, got {alpha!r}")
    if not (isinstance(min_log_odds, int | float) and math.isfinite(min_log_odds) and min_log_odds >= 0):
        raise ToxlensError(f"min_log_odds must be a finite number >= 0, got {min_log_odds!r}")
    tox: Counter[str] = Counter()
    non: Counter[str] = Counter()
    for text, label in zip(texts, labels):
        (tox if label == 1 else non).update(words_of(text, min_len))
    out = []
    for w in set(tox) | set(non):
        t, n = tox[w], non[w]
        if t + n < min_count:
            continue
        delta = math.log((t + alpha) / (n_tox - t + alpha)) - math.log((n + alpha) / (n_non - n + alpha))
        z = delta / math.sqrt(1 / (t + alpha) + 1 / (n + alpha))
        if delta >= min_log_odds:
            out.append(LabelWord(w, z, delta, t, n))
    out.sort(key=lambda r: (-r.z, r.word))
    return out[:top]
