"""Next-token sampling and word boundaries, shared by every generation path.

* :class:`Sampling` holds every choice that changes which token is drawn (temperature, top-k, top-p,
  greedy). Each sequence draws from its own ``torch.Generator``, seeded per sequence, so a sequence's
  tokens never depend on which other sequences share its batch.
* :func:`word_starts` marks the vocabulary entries that begin a new word: a rollback may only cut the
  text in front of such a token, so the kept text never ends inside a word.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from lens.errors import ToxlensError

# Leading characters that BPE / SentencePiece tokenizers use for "this token starts after a space or line".
_BOUNDARY_PREFIXES = ("Ġ", "▁", " ", "Ċ", "\n", "\t", "ĉ")


@dataclass(frozen=True)
class Sampling:
    """How a token is drawn from the next-token logits.

    ``greedy``: argmax (ties → lowest id). Otherwise the logits are divided by ``temperature``, cut to
    the ``top_k`` largest (if set), then to the smallest set whose probability reaches ``top_p`` (if
    set), renormalised, and one token is drawn with ``torch.multinomial`` and the sequence's generator.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    greedy: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ToxlensError(f"temperature must be a finite number > 0, got {self.temperature!r}")
        if self.top_k is not None and (isinstance(self.top_k, bool) or self.top_k < 1):
            raise ToxlensError(f"top_k must be None or an int >= 1, got {self.top_k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ToxlensError(f"top_p must be None or in (0, 1], got {self.top_p!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def sample_rows(
        self,
        logits: Float[Tensor, "batch d_vocab"],
        generators: Sequence[torch.Generator],
        rows: Sequence[int],
        forbid: Sequence[Iterable[int]],
    ) -> list[int]:
        """One token for each of ``rows`` of ``logits``, drawn with that row's generator; the ids in
        ``forbid[k]`` get probability 0 for ``rows[k]``. The transforms run on all chosen rows at once;
        each row's draw depends only on its own logits and generator."""
        if not rows:
            return []
        x = logits[list(rows)].float()  # indexing with a list copies: logits is not modified below
        for k, banned in enumerate(forbid):
            b = list(banned)
            if b:
                x[k, b] = -math.inf
        # a row whose maximum is finite has a finite entry: the elementwise test only when one is not
        if not bool(torch.isfinite(x.amax(dim=-1)).all()):
            dead = ~torch.isfinite(x).any(dim=-1)
            if bool(dead.any()):
                raise ToxlensError(
                    f"rows {[rows[k] for k in dead.nonzero()[:, 0].tolist()]}: every token is forbidden"
                )
        if self.greedy:
            greedy: list[int] = torch.argmax(x, dim=-1).tolist()
            return greedy
        x = x / self.temperature
        if self.top_k is not None and self.top_k < x.shape[-1]:
            kth = torch.topk(x, self.top_k, dim=-1).values[:, -1:]
            x = x.masked_fill(x < kth, -math.inf)
        probs = torch.softmax(x, dim=-1)
        if self.top_p is not None and self.top_p < 1:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True)
            cum = torch.cumsum(sorted_p, dim=-1)
            drop_sorted = (cum - sorted_p) >= self.top_p  # keep the smallest prefix reaching top_p
            drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
            probs = probs.masked_fill(drop, 0.0)
            probs = probs / probs.sum(-1, keepdim=True)
        # one draw per row with its own generator; read back once (one device sync per step, not one per row)
        draws = [torch.multinomial(probs[k], 1, generator=g) for k, g in enumerate(generators)]
        out: list[int] = torch.cat(draws).tolist()
        return out


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device if device.type == "cuda" else "cpu")
    gen.manual_seed(int(seed))
    return gen


_WORD_STARTS: dict[int, tuple[Any, Tensor]] = {}


def word_starts(tokenizer: Any) -> Bool[Tensor, "d_vocab"]:
    """``True`` for token ids that begin a new word (or are punctuation, whitespace or special).

    A token begins a word when its vocabulary string starts with a space marker (``Ġ``, ``▁``, a space,
    a newline) or with a character that is not a letter or digit. Word-level tokenizers (every token a
    whole word) mark every id.
    """
    n = len(tokenizer)
    hit = _WORD_STARTS.get(id(tokenizer))
    if hit is not None and hit[0] is tokenizer and hit[1].shape[0] == n:
        return hit[1]
    table = _word_starts(tokenizer, n)
    _WORD_STARTS[id(tokenizer)] = (tokenizer, table)
    return table


def _word_starts(tokenizer: Any, n: int) -> Bool[Tensor, "d_vocab"]:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    model_type = type(backend.model).__name__ if backend is not None else ""
    if model_type == "WordLevel":
        return torch.ones(n, dtype=torch.bool)
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    out = torch.zeros(n, dtype=torch.bool)
    for i, tok in enumerate(tokenizer.convert_ids_to_tokens(list(range(n)))):
        if i in special or not tok or tok.startswith(_BOUNDARY_PREFIXES) or not tok[0].isalnum():
            out[i] = True
    return out
