"""A linear toxicity probe on the residual stream.

* :func:`collect_residuals` pools ``blocks.{l}.hook_resid_post`` (or ``resid_pre``) over positions
  (``mean`` or ``last``). Texts are grouped by token length and batched only within a group, so no
  padding ever enters a forward and a text's features do not depend on the batch it ran in.
  Texts longer than ``max_tokens`` (default: the model's context) keep their first ``max_tokens``.
* :func:`train_probe` standardises the features (train-split mean / std, recorded), fits an
  L2-regularised logistic regression (scikit-learn, lbfgs) on a seeded, stratified split and reports
  held-out accuracy and ROC AUC (Mann–Whitney, ties counted half).
* :class:`Probe` scores raw residual vectors (any leading shape, e.g. one token as it is generated);
  ``direction`` is the unit vector of the un-standardised weights (``w / std``) in residual space.
  Saved as ``probe.safetensors`` + ``probe.json``; never pickle.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from safetensors.torch import load_file, save_file
from torch import Tensor

from lens.errors import ToxlensError
from lens.hooks import attach, keepers, resid_post_name, resid_pre_name
from lens.io import atomic_file
from lens.model import LensModel

HOOKS: dict[str, Callable[[int], str]] = {"resid_post": resid_post_name, "resid_pre": resid_pre_name}
POOLINGS = ("mean", "last")
FORMAT_VERSION = 1


@dataclass
class Probe:
    layer: int
    hook: str
    pooling: str
    weight: Float[Tensor, "d_model"]
    bias: float
    mean: Float[Tensor, "d_model"]
    std: Float[Tensor, "d_model"]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def direction(self) -> Float[Tensor, "d_model"]:
        """Unit vector in residual space along which the logit grows (``weight / std``, normalised)."""
        raw = self.weight / self.std
        return raw / raw.norm()

    def logit(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        if resid.shape[-1] != self.weight.shape[0]:
            raise ToxlensError(
                f"resid has last dimension {resid.shape[-1]}, expected d_model={self.weight.shape[0]}"
            )
        w, mu, sd = (t.to(resid.device) for t in (self.weight, self.mean, self.std))
        return ((resid.float() - mu) / sd) @ w + self.bias

    def score(self, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "..."]:
        """Probability of the positive (toxic) class for each residual vector."""
        return torch.sigmoid(self.logit(resid))

    def save(self, directory: str | Path) -> Path:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": self.weight, "mean": self.mean, "std": self.std, "direction": self.direction}
        tensors = {k: v.detach().float().contiguous().cpu() for k, v in tensors.items()}
        atomic_file(out / "probe.safetensors", lambda p: save_file(tensors, p))
        header = {
            "format_version": FORMAT_VERSION,
            "layer": self.layer,
            "hook": self.hook,
            "pooling": self.pooling,
            "bias": self.bias,
            **self.metadata,
        }
        atomic_file(out / "probe.json", lambda p: Path(p).write_text(json.dumps(header, indent=2)))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> Probe:
        d = Path(directory)
        js, st = d / "probe.json", d / "probe.safetensors"
        if not js.is_file() or not st.is_file():
            raise ToxlensError(f"{str(d)!r} holds no saved probe: expected probe.json and probe.safetensors")
        meta = json.loads(js.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ToxlensError(
                f"{js}: format_version {meta.get('format_version')!r}, expected {FORMAT_VERSION}"
            )
        t = load_file(str(st))
        core = {k: meta.pop(k) for k in ("layer", "hook", "pooling", "bias")}
        meta.pop("format_version")
        return cls(
            core["layer"],
            core["hook"],
            core["pooling"],
            t["weight"],
            float(core["bias"]),
            t["mean"],
            t["std"],
            meta,
        )


def tokenize_texts(
    model: LensModel, texts: Sequence[str], prepend_bos: bool, max_tokens: int
) -> list[list[int]]:
    """Token ids of every text, cut to its first ``max_tokens``; a text without tokens is an error."""
    ids = [model.tokenize(t, prepend_bos)[:max_tokens] for t in texts]
    empty = [i for i, row in enumerate(ids) if not row]
    if empty:
        raise ToxlensError(
            f"texts {empty[:5]} have no tokens; expected every text to give at least one token"
        )
    return ids


def length_batches(
    model: LensModel, ids: Sequence[Sequence[int]], names: Sequence[str], stop: int, batch_size: int
) -> Iterator[tuple[list[int], dict[str, Tensor]]]:
    """Run blocks ``0 .. stop-1`` over the texts grouped by token length (never padded), ``batch_size``
    at a time; yield each batch's text indices and its activations at the hooks ``names``."""
    groups: dict[int, list[int]] = defaultdict(list)
    for i, row in enumerate(ids):
        groups[len(row)].append(i)
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            rows = members[start : start + batch_size]
            seen: dict[str, Tensor] = {}
            prepared = model.prepare(torch.tensor([list(ids[i]) for i in rows], device=model.device))
            with attach(model.bridge, keepers(seen, list(names))):
                model.run_layers(prepared.resid, prepared, 0, stop)
            yield rows, seen


# -- features ---------------------------------------------------------------------------------
@torch.no_grad()
def collect_residuals(
    model: LensModel,
    texts: Sequence[str],
    layers: Sequence[int],
    batch_size: int = 32,
    hook: str = "resid_post",
    pooling: str = "mean",
    prepend_bos: bool = False,
    max_tokens: int | None = None,
) -> dict[int, Float[Tensor, "n d_model"]]:
    """Pooled residual stream of every text at every layer in ``layers`` (float32, on the CPU)."""
    if hook not in HOOKS:
        raise ToxlensError(f"unknown probe hook {hook!r}; expected one of {sorted(HOOKS)}")
    if pooling not in POOLINGS:
        raise ToxlensError(f"unknown pooling {pooling!r}; expected one of {POOLINGS}")
    if batch_size < 1:
        raise ToxlensError(f"batch_size must be >= 1, got {batch_size}")
    layers = list(layers)
    bad = [layer for layer in layers if not 0 <= layer < model.n_layers]
    if not layers or bad:
        raise ToxlensError(f"layers must be a non-empty list within [0, {model.n_layers}), got {layers}")
    if not texts:
        raise ToxlensError("collect_residuals needs at least one text, got none")
    ids = tokenize_texts(model, texts, prepend_bos, max_tokens or model.info.n_ctx)
    feats = {layer: torch.zeros(len(texts), model.info.d_model) for layer in layers}
    names = {HOOKS[hook](layer): layer for layer in layers}
    for rows, seen in length_batches(model, ids, list(names), max(layers) + 1, batch_size):
        for name, layer in names.items():
            act = seen[name].float()
            feats[layer][rows] = (act.mean(1) if pooling == "mean" else act[:, -1]).cpu()
    return feats


# -- training ---------------------------------------------------------------------------------
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
    y = _check_labels(texts, labels)
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
    y = _check_labels(texts, labels)
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


def _check_labels(texts: Sequence[str], labels: Sequence[int]) -> Tensor:
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


# -- data -------------------------------------------------------------------------------------
def load_labelled(
    path: str | Path,
    text_col: str,
    label_col: str,
    positive_labels: Sequence[str | int],
    negative_labels: Sequence[str | int] | None = None,
    limit: int | None = None,
) -> tuple[list[str], list[int]]:
    """Texts and 0/1 labels from a CSV (header row) or JSONL file.

    A row is positive (1) when ``str(row[label_col])`` is one of ``positive_labels``; otherwise it is
    negative, unless ``negative_labels`` is given, in which case other values are errors.
    Malformed rows raise with their line number. ``limit`` keeps only the first ``limit`` rows.
    """
    p = Path(path)
    if not p.is_file():
        raise ToxlensError(f"labelled data file {str(p)!r} does not exist")
    pos = {str(v) for v in positive_labels}
    neg = None if negative_labels is None else {str(v) for v in negative_labels}
    if not pos:
        raise ToxlensError("positive_labels is empty; expected at least one label value")
    texts: list[str] = []
    labels: list[int] = []
    for line, row in _rows(p):
        if limit is not None and len(texts) >= limit:
            break
        missing = [c for c in (text_col, label_col) if c not in row or row[c] is None]
        if missing:
            raise ToxlensError(f"{p}:{line}: missing column(s) {missing}; row has {sorted(row)}")
        text, label = row[text_col], str(row[label_col]).strip()
        if not isinstance(text, str) or not text.strip():
            raise ToxlensError(f"{p}:{line}: column {text_col!r} must be a non-empty string, got {text!r}")
        if neg is not None and label not in pos | neg:
            raise ToxlensError(
                f"{p}:{line}: label {label!r} is neither positive {sorted(pos)} nor negative {sorted(neg)}"
            )
        texts.append(text)
        labels.append(int(label in pos))
    if not texts:
        raise ToxlensError(f"{p}: no rows found; expected a header and at least one row")
    return texts, labels


def _rows(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        with p.open(encoding="utf-8") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    obj = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise ToxlensError(
                        f"{p}:{n}: invalid JSON ({err.msg}); expected one object per line"
                    ) from err
                if not isinstance(obj, dict):
                    raise ToxlensError(f"{p}:{n}: expected a JSON object, got {type(obj).__name__}")
                yield n, obj
    else:
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            try:
                start = 2
                for row in reader:
                    if None in row:
                        raise ToxlensError(
                            f"{p}:{start}: {len(row) + len(row[None]) - 1} fields, "  # type: ignore[index]
                            f"expected {len(reader.fieldnames or [])}"
                        )
                    yield start, row
                    start = reader.line_num + 1
            except csv.Error as err:
                raise ToxlensError(f"{p}:{reader.line_num}: malformed CSV ({err})") from err
