"""Fitting a text probe and its held-out metrics.

:func:`fit_probe` standardises the features (train-split mean / std, recorded), fits an L2-regularised
logistic regression (scikit-learn, lbfgs) on a seeded, stratified split (:func:`split`) and reports
held-out accuracy and ROC AUC (:func:`roc_auc`: Mann–Whitney, ties counted half).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from lens.errors import ToxlensError
from lens.model import LensModel
from lens.probe_core import Probe
from lens.probe_features import collect_residuals


def train_probe(
    model: LensModel,
    texts: Sequence[str],
    labels: Sequence[int],
    layer: int,
    hook: str = "resid_post",
    pooling: str = "mean",
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    batch_size: int = 32,
    positive_labels: Sequence[str] = (),
    prepend_bos: bool = False,
) -> Probe:
    """Fit a probe at one layer; held-out metrics are in ``probe.metadata``."""
    y = check_labels(texts, labels)
    feats = collect_residuals(model, texts, [layer], batch_size, hook, pooling, prepend_bos)[layer]
    meta = {
        "spec": model.spec,
        "data_hash": data_hash(texts, labels),
        "positive_labels": list(positive_labels),
        "prepend_bos": prepend_bos,
    }
    return fit_probe(feats, y, layer, hook, pooling, test_fraction, seed, C, meta)


def train_all_layers(
    model: LensModel,
    texts: Sequence[str],
    labels: Sequence[int],
    layers: Sequence[int] | None = None,
    hook: str = "resid_post",
    pooling: str = "mean",
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    batch_size: int = 32,
    prepend_bos: bool = False,
) -> dict[int, dict[str, float]]:
    """Held-out metrics of a probe at every layer (features collected in one pass)."""
    y = check_labels(texts, labels)
    layers = list(range(model.n_layers)) if layers is None else list(layers)
    feats = collect_residuals(model, texts, layers, batch_size, hook, pooling, prepend_bos)
    out = {}
    for layer in layers:
        m = fit_probe(feats[layer], y, layer, hook, pooling, test_fraction, seed, C).metadata
        out[layer] = {k: m[k] for k in ("accuracy", "auc", "n_train", "n_test")}
    return out


def fit_probe(
    feats: Float[Tensor, "n d_model"],
    y: Int[Tensor, "n"],
    layer: int,
    hook: str,
    pooling: str,
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    metadata: dict[str, Any] | None = None,
    split_idx: tuple[list[int], list[int]] | None = None,
) -> Probe:
    """Standardise, split (seeded, stratified; or the given ``split_idx`` = (train, test) rows), fit,
    evaluate on the held-out part."""
    from sklearn.linear_model import LogisticRegression

    if not 0 < test_fraction < 1:
        raise ToxlensError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if not (isinstance(C, (int, float)) and math.isfinite(C) and C > 0):
        raise ToxlensError(f"C must be a finite positive number, got {C!r}")
    if not torch.isfinite(feats).all():
        raise ToxlensError(f"features of layer {layer} contain NaN/inf; expected finite residuals")
    train, test = split(y, test_fraction, seed) if split_idx is None else split_idx
    mu = feats[train].mean(0)
    sd = feats[train].std(0, unbiased=False).clamp_min(1e-6)
    x = (feats - mu) / sd
    clf = LogisticRegression(C=C, max_iter=2000).fit(x[train].double().numpy(), y[train].numpy())
    probe = Probe(
        layer,
        hook,
        pooling,
        torch.tensor(clf.coef_[0], dtype=torch.float32),
        float(clf.intercept_[0]),
        mu,
        sd,
        dict(metadata or {}),
    )
    p = probe.score(feats[test])
    probe.metadata.update(
        accuracy=float(((p > 0.5).long() == y[test]).float().mean()),
        auc=roc_auc(p, y[test]),
        n_train=len(train),
        n_test=len(test),
        C=C,
        seed=seed,
        test_fraction=test_fraction,
    )
    probe.metadata.setdefault("monitor", probe.is_monitor)
    probe.metadata.setdefault("monitor_reason", probe.monitor_refusal())
    return probe


def split(y: Int[Tensor, "n"], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded stratified split: per class, ``ceil(test_fraction · n_class)`` examples are held out."""
    gen = torch.Generator().manual_seed(seed)
    train: list[int] = []
    test: list[int] = []
    for cls in (0, 1):
        members = torch.nonzero(y == cls)[:, 0]
        idx: list[int] = members[torch.randperm(len(members), generator=gen)].tolist()
        k = math.ceil(test_fraction * len(idx))
        test += idx[:k]
        train += idx[k:]
    return sorted(train), sorted(test)


def roc_auc(scores: Float[Tensor, "n"], y: Int[Tensor, "n"]) -> float:
    """ROC AUC = P(score of a positive > score of a negative), ties counting one half."""
    pos, neg = scores[y == 1].double(), scores[y == 0].double()
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())


def check_labels(texts: Sequence[str], labels: Sequence[int]) -> Tensor:
    if len(texts) != len(labels):
        raise ToxlensError(f"got {len(texts)} texts but {len(labels)} labels; expected one label per text")
    if any(v not in (0, 1) for v in labels):
        raise ToxlensError(f"labels must be 0 or 1, got values {sorted({v for v in labels} - {0, 1})[:5]}")
    y = torch.tensor(list(labels), dtype=torch.long)
    counts = [int((y == c).sum()) for c in (0, 1)]
    if min(counts) < 2:
        raise ToxlensError(
            f"need at least 2 examples of each class, got {counts[0]} negative / {counts[1]} positive"
        )
    return y


def data_hash(texts: Sequence[str], labels: Sequence[int]) -> str:
    blob = json.dumps([list(texts), [int(v) for v in labels]], ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


_check_labels = check_labels  # the name lens.token_probe used before the split
