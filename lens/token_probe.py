"""Token-level probes: one training example per token, as the generation monitor sees them.

A probe fitted on text-pooled residuals (``mean``) sees, at generation time, single-token residuals
from another distribution (their scores saturate); a probe that monitors tokens should be trained on
tokens. :func:`train_token_probe` uses every token of every text (``pooling="token"``), labelled by

* ``token_labels="text"`` — the label of the text the token belongs to ("is this text toxic, judging
  from here"); in a toxic context every token is positive;
* ``token_labels="lexicon"`` — whether the *word the token is part of* is profane by the lexical
  model that the PyPI package ``alt-profanity-check`` ships (``predict_prob ≥ lexicon_threshold``;
  a word is the maximal run of non-space characters around the token's characters). This marks the
  tokens that *start or continue a toxic word* — what a rollback has to cut. Note: the same package is
  the default toxicity scorer of ``toxlens evaluate``; state that when reporting results;
* ``token_labels="words"`` — whether the token's word contains one of ``words`` (a list the caller
  derived from human text labels, e.g. ``scripts/label_words.py``; no scorer): the word, lower-cased with
  apostrophes dropped, is split into letter runs (``[a-z]+``) and is positive when any run is listed. The
  scorer-independent token labels: text labels → word statistics → token labels.

Texts, not tokens, are split into train and held-out sets (seeded, stratified by the text label), so
no text contributes to both. Texts are grouped by token length, never padded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe_core import HOOKS, Probe
from lens.probe_features import length_batches, tokenize_texts
from lens.probe_fit import check_labels, data_hash, fit_probe, split

TOKEN_LABELS = ("text", "lexicon", "words")


@torch.no_grad()
def collect_token_residuals(
    model: LensModel,
    ids: Sequence[Sequence[int]],
    layer: int,
    hook: str = "resid_post",
    batch_size: int = 32,
) -> tuple[Float[Tensor, "n_tokens d_model"], Int[Tensor, "n_tokens"]]:
    """Residual of every token of every tokenized text (float32, CPU) and the text index of each row,
    in text order."""
    if hook not in HOOKS:
        raise ToxlensError(f"unknown probe hook {hook!r}; expected one of {sorted(HOOKS)}")
    if not 0 <= layer < model.n_layers:
        raise ToxlensError(f"layer must be in [0, {model.n_layers}), got {layer}")
    per_text: list[Tensor | None] = [None] * len(ids)
    name = HOOKS[hook](layer)
    for rows, seen in length_batches(model, ids, [name], layer + 1, batch_size):
        for k, i in enumerate(rows):
            per_text[i] = seen[name][k].float().cpu()
    feats = torch.cat([t for t in per_text if t is not None])
    index = torch.cat([torch.full((len(row),), i, dtype=torch.long) for i, row in enumerate(ids)])
    return feats, index


def token_words(model: LensModel, texts: Sequence[str], ids: Sequence[Sequence[int]]) -> list[list[str]]:
    """Per token: the word (maximal run of non-space characters) its characters belong to; ``""`` for a
    BOS put in front or a token with no characters."""
    words_per_text: list[list[str]] = []
    for text, row in zip(texts, ids):
        enc = model.tokenizer(text, return_offsets_mapping=True)
        offsets = list(enc["offset_mapping"])
        added = (
            1 if len(row) and (not enc["input_ids"] or row[0] != enc["input_ids"][0]) else 0
        )  # BOS put in front
        words = [""] * added + [_word_at(text, a, b) for a, b in offsets]
        words_per_text.append(words[: len(row)])
    return words_per_text


def lexicon_token_labels(
    model: LensModel, texts: Sequence[str], ids: Sequence[Sequence[int]], threshold: float = 0.5
) -> list[list[int]]:
    """Per token: 1 when the word it belongs to scores ``≥ threshold`` with alt-profanity-check."""
    from profanity_check import predict_prob

    words_per_text = token_words(model, texts, ids)
    vocab = sorted({w for ws in words_per_text for w in ws if w})
    probs = dict(zip(vocab, (float(p) for p in predict_prob(vocab)))) if vocab else {}
    return [[int(bool(w) and probs[w] >= threshold) for w in ws] for ws in words_per_text]


def word_list_token_labels(
    model: LensModel, texts: Sequence[str], ids: Sequence[Sequence[int]], words: Sequence[str]
) -> list[list[int]]:
    """Per token: 1 when a letter run of the word it belongs to is in ``words`` (module docstring)."""
    from lens.label_words import WORD, words_of

    listed = {w.strip().lower().replace("'", "") for w in words if w.strip()}
    if not listed:
        raise ToxlensError("token_labels='words' needs a non-empty word list")
    never = sorted(w for w in listed if not WORD.fullmatch(w))
    if never:
        raise ToxlensError(
            f"token_labels='words': listed word(s) {never[:5]} can never match; expected letters a-z only "
            "(a word is matched by its letter runs, e.g. 'f*ck' by 'f' and 'ck')"
        )
    return [[int(bool(words_of(w, 1) & listed)) for w in ws] for ws in token_words(model, texts, ids)]


def _word_at(text: str, a: int, b: int) -> str:
    if a >= b:
        return ""
    s, e = a, b
    while s > 0 and not text[s - 1].isspace():
        s -= 1
    while e < len(text) and not text[e].isspace():
        e += 1
    return text[s:e].strip()


def train_token_probe(
    model: LensModel,
    texts: Sequence[str],
    labels: Sequence[int],
    layer: int,
    token_labels: str = "text",
    hook: str = "resid_post",
    lexicon_threshold: float = 0.5,
    words: Sequence[str] | None = None,
    max_tokens: int = 64,
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 0.1,
    batch_size: int = 32,
    prepend_bos: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Probe:
    """Fit a ``pooling="token"`` probe at ``layer``; held-out per-token accuracy and ROC AUC are in
    ``probe.metadata`` (texts split, see module docstring)."""
    if token_labels not in TOKEN_LABELS:
        raise ToxlensError(f"unknown token_labels {token_labels!r}; expected one of {TOKEN_LABELS}")
    if (words is not None) != (token_labels == "words"):
        raise ToxlensError(
            f"token_labels={token_labels!r} with words={'a list' if words is not None else None}: "
            "a word list is given exactly when token_labels='words'"
        )
    if max_tokens < 1:
        raise ToxlensError(f"max_tokens must be >= 1, got {max_tokens}")
    y_text = check_labels(texts, labels)
    ids = tokenize_texts(model, texts, prepend_bos, max_tokens)
    feats, index = collect_token_residuals(model, ids, layer, hook, batch_size)
    if token_labels == "text":
        y = y_text[index]
    elif token_labels == "words":
        assert words is not None  # checked above
        y = torch.tensor([v for row in word_list_token_labels(model, texts, ids, words) for v in row])
    else:
        y = torch.tensor(
            [v for row in lexicon_token_labels(model, texts, ids, lexicon_threshold) for v in row]
        )
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < 2:
        raise ToxlensError(
            f"token labels ({token_labels}) give {counts[0]} negative / {counts[1]} positive tokens"
        )
    _, test_texts = split(y_text, test_fraction, seed)
    test_set = set(test_texts)
    is_test = torch.tensor([int(i) in test_set for i in index.tolist()])
    split_idx = (torch.nonzero(~is_test)[:, 0].tolist(), torch.nonzero(is_test)[:, 0].tolist())
    meta = {
        "spec": model.spec,
        "data_hash": data_hash(texts, labels),
        "token_labels": token_labels,
        "lexicon_threshold": lexicon_threshold if token_labels == "lexicon" else None,
        "n_token_words": len(words) if words is not None else None,
        "max_tokens": max_tokens,
        "prepend_bos": prepend_bos,
        "n_texts": len(texts),
        "n_tokens": len(y),
        "positive_tokens": counts[1],
        "split": "by text (seeded, stratified by text label)",
        **(metadata or {}),
    }
    probe = fit_probe(feats, y, layer, hook, "token", test_fraction, seed, C, meta, split_idx=split_idx)
    probe.metadata["positive_fraction"] = counts[1] / max(1, sum(counts))
    if not math.isfinite(probe.metadata["auc"]):
        raise ToxlensError("held-out AUC is not finite: the held-out texts hold a single token class")
    return probe
