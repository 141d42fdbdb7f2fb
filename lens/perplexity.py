"""Token-weighted perplexity of a :class:`~lens.model.LensModel` on a list of texts.

Every text is scored on its own: ``ids = model.tokenize(text, prepend_bos)[:max_tokens]``; position
``i`` predicts ``ids[i + 1]``, so the first token of a text is never predicted (with ``prepend_bos`` that
first token is BOS and the text's first word *is* predicted). Then

    nll_sum    = Σ_texts Σ_{i ≥ 1} −log softmax(logits[i − 1])[ids[i]]
    n_tokens   = Σ_texts (len(ids) − 1)
    perplexity = exp(nll_sum / n_tokens)

Texts are grouped by token length and batched only within a group, so no padding ever enters a
forward and a text's contribution does not depend on ``batch_size``. The forward is the bridge's own
(``model.bridge(tokens, use_cache=False)``): every hook and edit active on the model applies, which is
the point — this measures the fluency of the *intervened* model. Log-probabilities are taken in
float32 and summed in float64.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel


@torch.no_grad()
def perplexity(
    model: LensModel,
    texts: Sequence[str],
    batch_size: int = 16,
    prepend_bos: bool = True,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """``{"perplexity", "nll_sum", "n_tokens", "n_texts", "n_truncated", "prepend_bos", "max_tokens"}``.

    ``prepend_bos=True`` needs a tokenizer with a BOS token (else a ToxlensError: pass ``False``).
    ``max_tokens`` (default: the model's context length) keeps each text's first ``max_tokens`` ids,
    BOS included; ``n_truncated`` counts the texts that were cut.
    """
    if isinstance(texts, str):
        raise ToxlensError("perplexity expects a list of texts, got a single string")
    if not texts:
        raise ToxlensError("perplexity needs at least one text, got none")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ToxlensError(f"batch_size must be an int >= 1, got {batch_size!r}")
    limit = model.info.n_ctx if max_tokens is None else max_tokens
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 2:
        raise ToxlensError(
            f"max_tokens must be an int >= 2 (one context and one predicted token), got {limit!r}"
        )
    ids: list[list[int]] = []
    n_truncated = 0
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ToxlensError(f"text {i} is a {type(text).__name__}; expected a string")
        if not model.tokenize(text):
            raise ToxlensError(f"text {i} ({text!r}) has no tokens; expected a non-empty text")
        row = model.tokenize(text, prepend_bos)
        n_truncated += len(row) > limit
        ids.append(row[:limit])
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(ids):
        if len(row) > 1:
            groups[len(row)].append(i)
    n_tokens = sum(length - 1 for length in groups for _ in groups[length])
    if n_tokens == 0:
        raise ToxlensError(
            f"none of the {len(texts)} texts has a token to predict (every one is a single token"
            f"{'' if prepend_bos else ' and prepend_bos=False'}); expected at least two tokens in some text"
        )
    nll_sum = 0.0
    for length in sorted(groups):
        members = groups[length]
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            tokens = torch.tensor([ids[i] for i in rows], device=model.device)
            nll_sum += float(token_nll(model.bridge(tokens, use_cache=False), tokens).double().sum())
    return {
        "perplexity": math.exp(nll_sum / n_tokens),
        "nll_sum": nll_sum,
        "n_tokens": n_tokens,
        "n_texts": len(texts),
        "n_truncated": n_truncated,
        "prepend_bos": prepend_bos,
        "max_tokens": limit,
    }


def token_nll(
    logits: Float[Tensor, "batch pos d_vocab"], tokens: Int[Tensor, "batch pos"]
) -> Float[Tensor, "batch pos_minus_1"]:
    """``−log softmax(logits[:, i])[tokens[:, i + 1]]`` for every position but the last (float32)."""
    if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
        raise ToxlensError(
            f"logits of shape {tuple(logits.shape)} do not match tokens of shape {tuple(tokens.shape)}; "
            "expected [batch, pos, d_vocab] and [batch, pos]"
        )
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -logp.gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]
