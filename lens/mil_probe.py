"""A token monitor learnt from text labels only: a multiple-instance (MIL) logistic probe.

The assumption (standard multiple-instance learning): a toxic text holds **at least one** toxic token,
and **every** token of a non-toxic text is non-toxic. Each token ``t`` of a text gets a logit
``z_t = ((x_t − μ) / σ) · w + b`` from its residual ``x_t`` at one layer (``μ``, ``σ``: mean / std of the
training texts' tokens); the text's logit aggregates its tokens' (``aggregation``):

* ``max`` (default): ``s = max_t z_t`` — the text's probability is exactly its most toxic token's, so a
  monitor threshold on token scores is a threshold on text probability;
* ``logsumexp``: ``s = (1/r) · log Σ_t exp(r · z_t)`` — a smooth max (``max ≤ s ≤ max + log(n)/r``);
* ``noisy-or``: ``P(text toxic) = 1 − Π_t (1 − σ(z_t))``.

``w, b`` minimise the mean binary cross-entropy of the training texts' labels plus
``‖w‖² / (2 · C · n_train_texts)`` (scikit-learn's convention for ``C``), by full-batch Adam from zero for
``steps`` steps (no randomness: the seed only draws the split). Texts, not tokens, are split into
train / held-out (seeded, stratified by text label). The result is an ordinary :class:`Probe` with
``pooling="max"`` (a direction + bias read per token at one layer), usable as a generation monitor.

Held-out metrics (``probe.metadata``): ``auc`` / ``accuracy`` of the aggregated text score, and
``token_eval``: at each threshold, the fraction of the tokens of non-toxic texts that reach it (false
firing), of toxic texts with at least one token reaching it (recall), of non-toxic texts with at least
one (false alarms), and of the tokens of toxic texts that reach it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe_core import Probe
from lens.probe_features import tokenize_texts
from lens.probe_fit import check_labels, data_hash, roc_auc, split
from lens.token_probe import collect_token_residuals

AGGREGATIONS = ("max", "logsumexp", "noisy-or")
EVAL_THRESHOLDS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def positions(index: Int[Tensor, "n_tokens"]) -> Int[Tensor, "n_tokens"]:
    """Position of every token inside its text, for a text index sorted in text order."""
    starts = torch.zeros_like(index)
    change = torch.nonzero(index[1:] != index[:-1])[:, 0] + 1
    starts[change] = change
    starts = torch.cummax(starts, 0).values
    return torch.arange(len(index)) - starts


def text_log_probs(
    z: Float[Tensor, "n_tokens"],
    index: Int[Tensor, "n_tokens"],
    n_texts: int,
    aggregation: str,
    lse_r: float = 5.0,
) -> tuple[Float[Tensor, "n_texts"], Float[Tensor, "n_texts"]]:
    """``(log P(toxic), log P(non-toxic))`` of every text from its tokens' logits ``z`` (``index``: the text
    of every token, texts numbered ``0..n_texts-1`` in order, each with at least one token)."""
    if aggregation == "noisy-or":
        # log P(non-toxic) = Σ_t log σ(−z_t) = −Σ_t softplus(z_t)
        log_neg = -torch.zeros(n_texts, dtype=z.dtype).index_add(0, index, F.softplus(z))
        log_pos = torch.log(-torch.expm1(log_neg.clamp(max=-1e-12)))
        return log_pos, log_neg
    pos = positions(index)
    grid = torch.full((n_texts, int(pos.max()) + 1), -math.inf, dtype=z.dtype)
    grid = grid.index_put((index, pos), z)
    if aggregation == "max":
        s = grid.max(1).values
    elif aggregation == "logsumexp":
        s = torch.logsumexp(lse_r * grid, 1) / lse_r
    else:
        raise ToxlensError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    return F.logsigmoid(s), F.logsigmoid(-s)


def fit_mil_probe(
    feats: Float[Tensor, "n_tokens d_model"],
    index: Int[Tensor, "n_tokens"],
    y_text: Int[Tensor, "n_texts"],
    layer: int,
    hook: str,
    aggregation: str = "max",
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    steps: int = 300,
    lr: float = 0.05,
    lse_r: float = 5.0,
    metadata: dict[str, Any] | None = None,
) -> Probe:
    """Fit the MIL probe on per-token features (see the module docstring); returns a ``pooling="max"``
    :class:`Probe` with held-out text and token metrics in its metadata."""
    if aggregation not in AGGREGATIONS:
        raise ToxlensError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    if not 0 < test_fraction < 1:
        raise ToxlensError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not (isinstance(C, (int, float)) and math.isfinite(C) and C > 0):
        raise ToxlensError(f"C must be a finite positive number, got {C!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ToxlensError(f"steps must be an int >= 1, got {steps!r}")
    if not (math.isfinite(lr) and lr > 0):
        raise ToxlensError(f"lr must be a finite positive number, got {lr!r}")
    if not (math.isfinite(lse_r) and lse_r > 0):
        raise ToxlensError(f"lse_r must be a finite positive number, got {lse_r!r}")
    if not torch.isfinite(feats).all():
        raise ToxlensError(f"token features of layer {layer} contain NaN/inf; expected finite residuals")
    n_texts = len(y_text)
    if len(index) != len(feats) or (len(index) and int(index.max()) >= n_texts):
        raise ToxlensError(f"index has {len(index)} rows for {len(feats)} features and {n_texts} texts")
    train_t, test_t = split(y_text, test_fraction, seed)

    def subset(texts: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        keep = torch.zeros(n_texts, dtype=torch.bool)
        keep[texts] = True
        renumber = torch.full((n_texts,), -1, dtype=torch.long)
        renumber[texts] = torch.arange(len(texts))
        rows = keep[index]
        return feats[rows], renumber[index[rows]], y_text[texts]

    x_tr, i_tr, y_tr = subset(train_t)
    x_te, i_te, y_te = subset(test_t)
    mu = x_tr.mean(0)
    sd = x_tr.std(0, unbiased=False).clamp_min(1e-6)
    xs = (x_tr - mu) / sd
    w = torch.zeros(feats.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    yf = y_tr.float()
    l2 = 1.0 / (2.0 * C * len(train_t))
    loss_value = math.nan
    for _ in range(steps):
        opt.zero_grad()
        log_pos, log_neg = text_log_probs(xs @ w + b, i_tr, len(train_t), aggregation, lse_r)
        bce = -(yf * log_pos + (1 - yf) * log_neg).mean()
        loss = bce + l2 * (w * w).sum()
        loss.backward()
        opt.step()
        loss_value = float(loss.detach())
    if not math.isfinite(loss_value):
        raise ToxlensError(f"MIL training diverged (loss {loss_value}); lower --lr or --C")
    probe = Probe(layer, hook, "max", w.detach().clone(), float(b.detach()), mu, sd, dict(metadata or {}))
    with torch.no_grad():
        z_te = probe.logit(x_te)
        log_pos, _ = text_log_probs(z_te, i_te, len(test_t), aggregation, lse_r)
        p_text = log_pos.exp()
        tok = torch.sigmoid(z_te)
    probe.metadata.update(
        labels="text-level only (multiple-instance: a toxic text has >= 1 toxic token, every token of a "
        "non-toxic text is non-toxic); no token labels used",
        aggregation=aggregation,
        lse_r=lse_r if aggregation == "logsumexp" else None,
        objective="mean text BCE + ||w||^2 / (2 * C * n_train_texts)",
        optimizer="adam, full batch, from zero",
        steps=steps,
        lr=lr,
        final_train_loss=loss_value,
        accuracy=float(((p_text > 0.5).long() == y_te).float().mean()),
        auc=roc_auc(p_text, y_te),
        n_train=len(train_t),
        n_test=len(test_t),
        n_train_tokens=len(x_tr),
        n_test_tokens=len(x_te),
        C=C,
        seed=seed,
        test_fraction=test_fraction,
        split="by text (seeded, stratified by text label)",
        token_eval=token_eval(tok, i_te, y_te),
        monitor=True,
        monitor_reason=None,
    )
    if not math.isfinite(probe.metadata["auc"]):
        raise ToxlensError("held-out text AUC is not finite: the held-out texts hold a single class")
    return probe


def token_eval(
    tok: Float[Tensor, "n_tokens"],
    index: Int[Tensor, "n_tokens"],
    y_text: Int[Tensor, "n_texts"],
    thresholds: Sequence[float] = EVAL_THRESHOLDS,
) -> dict[str, Any]:
    """Per-token firing of scores ``tok`` (texts ``index``, labels ``y_text``) at each threshold."""
    n = len(y_text)
    tox_tok = y_text[index] == 1
    text_max = torch.full((n,), -math.inf).scatter_reduce(0, index, tok.float(), "amax")
    out: dict[str, Any] = {"thresholds": list(thresholds)}
    for key, fn in (
        ("token_fire_rate_nontoxic_texts", lambda t: float((tok[~tox_tok] >= t).float().mean())),
        ("token_fire_rate_toxic_texts", lambda t: float((tok[tox_tok] >= t).float().mean())),
        ("text_recall", lambda t: float((text_max[y_text == 1] >= t).float().mean())),
        ("text_false_alarm", lambda t: float((text_max[y_text == 0] >= t).float().mean())),
    ):
        out[key] = [fn(t) for t in thresholds]
    return out


def train_mil_probe(
    model: LensModel,
    texts: Sequence[str],
    labels: Sequence[int],
    layer: int,
    hook: str = "resid_post",
    aggregation: str = "max",
    max_tokens: int = 64,
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    steps: int = 300,
    lr: float = 0.05,
    lse_r: float = 5.0,
    batch_size: int = 32,
    prepend_bos: bool = False,
    metadata: dict[str, Any] | None = None,
) -> Probe:
    """Collect every token's residual at ``layer`` and fit :func:`fit_mil_probe` on the text labels."""
    if max_tokens < 1:
        raise ToxlensError(f"max_tokens must be >= 1, got {max_tokens}")
    if aggregation not in AGGREGATIONS:
        raise ToxlensError(f"unknown aggregation {aggregation!r}; expected one of {AGGREGATIONS}")
    y_text = check_labels(texts, labels)
    ids = tokenize_texts(model, texts, prepend_bos, max_tokens)
    feats, index = collect_token_residuals(model, ids, layer, hook, batch_size)
    meta = {
        "spec": model.spec,
        "data_hash": data_hash(texts, labels),
        "max_tokens": max_tokens,
        "prepend_bos": prepend_bos,
        "n_texts": len(texts),
        "n_tokens": len(feats),
        **(metadata or {}),
    }
    return fit_mil_probe(
        feats, index, y_text, layer, hook, aggregation, test_fraction, seed, C, steps, lr, lse_r, meta
    )
